"""Fixtures shared by every test: the anyio backend and unique names."""

from __future__ import annotations

import os

import pytest


@pytest.fixture
def anyio_backend() -> str:
    # asyncq's broker clients are asyncio-only, so the tests run on asyncio.
    return "asyncio"


@pytest.fixture
def unique() -> str:
    """A name no other test uses: for memory:// brokers, key prefixes, queue names."""
    return f"t{os.urandom(6).hex()}"
