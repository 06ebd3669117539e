"""Fixtures of the SQLite-specific tests: a file of the test's own, in its temporary
directory."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "jobs.db"


@pytest.fixture
def url(db_path: Path) -> str:
    return f"sqlite:///{db_path}"
