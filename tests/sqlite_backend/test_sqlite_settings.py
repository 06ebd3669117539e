"""How a ``sqlite://`` URL names its file and options, and the embedded default broker."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

import asyncq
from asyncq.sqlite import SqliteBackend
from asyncq.sqlite.schema import SCHEMA_VERSION

pytestmark = pytest.mark.anyio


def test_three_slashes_name_a_file_relative_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    backend = SqliteBackend.from_url("sqlite:///data/jobs.db")
    assert backend.path == tmp_path / "data" / "jobs.db"
    assert backend.describe() == f"the sqlite file {tmp_path / 'data' / 'jobs.db'}"


def test_four_slashes_name_an_absolute_path(tmp_path: Path) -> None:
    backend = SqliteBackend.from_url(f"sqlite:///{tmp_path}/jobs.db?visibility_timeout=5")
    assert backend.path == tmp_path / "jobs.db"
    assert backend.visibility_timeout == 5.0
    assert backend.lease_renewal_interval == pytest.approx(5 / 3)


def test_options_are_parsed(tmp_path: Path) -> None:
    backend = SqliteBackend.from_url(
        f"sqlite:///{tmp_path}/jobs.db?result_ttl=60&dead_ttl=3600&dead_max=10"
        "&synchronous=FULL&busy_timeout=2.5&max_message_size=1000"
    )
    settings = backend.settings
    assert (settings.result_ttl, settings.dead_ttl, settings.dead_max) == (60.0, 3600.0, 10)
    assert (settings.synchronous, settings.busy_timeout) == ("full", 2.5)
    assert backend.max_message_size == 1000


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("sqlite://host/jobs.db", "names a host"),
        ("sqlite://", "names no file"),
        ("sqlite:///", "names no file"),
        ("sqlite:///jobs.db?synchronous=off", "bad value 'off' for option 'synchronous'"),
        ("sqlite:///jobs.db?visibility_timeout=0", "must be a number > 0"),
        ("sqlite:///jobs.db?journal=wal", "unknown option 'journal'"),
    ],
)
def test_a_bad_url_is_a_configuration_error(url: str, message: str) -> None:
    with pytest.raises(asyncq.ConfigurationError, match=message):
        SqliteBackend.from_url(url)


def test_an_app_naming_no_broker_is_on_the_embedded_default_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ASYNCQ_BROKER", raising=False)
    monkeypatch.chdir(tmp_path)
    app = asyncq.App()
    assert app.broker_url == "sqlite:///asyncq.db"
    assert app.broker_is_default
    assert isinstance(app.backend, SqliteBackend)
    assert app.backend.path == tmp_path / "asyncq.db"
    assert app.describe_broker() == (
        f"sqlite:///asyncq.db (the sqlite file {tmp_path / 'asyncq.db'}), the embedded "
        "default (shared by this host's processes that use this file)"
    )
    named = asyncq.App(f"sqlite:///{tmp_path}/other.db")
    assert not named.broker_is_default
    assert (
        named.describe_broker()
        == f"sqlite:///{tmp_path}/other.db (the sqlite file {tmp_path}/other.db)"
    )
    monkeypatch.setenv("ASYNCQ_BROKER", "memory://from-env")
    assert not asyncq.App().broker_is_default


async def test_the_file_and_its_directory_are_made_on_first_connect_in_wal_mode(
    tmp_path: Path,
) -> None:
    path = tmp_path / "new" / "dir" / "jobs.db"
    async with asyncq.App(f"sqlite:///{path}"):
        assert path.exists()
        conn = sqlite3.connect(path)
        try:
            assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
            assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        finally:
            conn.close()


async def test_a_file_written_by_a_newer_asyncq_is_refused(db_path: Path, url: str) -> None:
    conn = sqlite3.connect(db_path)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(asyncq.ConfigurationError, match="written by a newer asyncq"):
        async with asyncq.App(url):
            pass


async def test_a_file_that_cannot_be_opened_says_which(tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("a file, not a directory")
    with pytest.raises(asyncq.BrokerUnavailable, match="cannot open the sqlite file"):
        async with asyncq.App(f"sqlite:///{tmp_path}/taken/jobs.db"):
            pass


@pytest.fixture
def garbage(db_path: Path) -> Path:
    db_path.write_bytes(os.urandom(4096))
    return db_path


async def test_a_file_that_is_not_a_database_is_a_broker_error(garbage: Path, url: str) -> None:
    with pytest.raises(asyncq.BrokerError, match="file is not a database"):
        async with asyncq.App(url):
            pass
