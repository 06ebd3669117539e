"""The schema's migrations: applied once when several Apps open together on an empty
database (the others wait on the advisory lock, then find nothing to do); the SQL of
``asyncq db upgrade --dry-run`` builds the same schema when a team applies it itself;
``migrate=false`` refuses a schema that is behind; a newer schema is refused."""

from __future__ import annotations

import os
import subprocess
import sys

import anyio
import asyncpg
import pytest
import services
from asyncq_postgres.schema import SCHEMA_VERSION
from harness import run_asyncq

import asyncq
from asyncq.errors import ConfigurationError

pytestmark = pytest.mark.anyio


async def test_apps_opening_together_on_an_empty_database_migrate_once(
    url: str, schema: str, conn: asyncpg.Connection
) -> None:
    apps = [asyncq.App(url) for _ in range(4)]
    opened: list[int] = []

    async def open_one(i: int) -> None:
        async with apps[i]:
            opened.append(i)
            await apps[i].queue_stats(["default"])

    async with anyio.create_task_group() as tg:
        for i in range(len(apps)):
            tg.start_soon(open_one, i)
    assert sorted(opened) == [0, 1, 2, 3]
    rows = await conn.fetch(f'SELECT version FROM "{schema}".migrations ORDER BY version')
    assert [r["version"] for r in rows] == list(range(1, SCHEMA_VERSION + 1))


async def test_the_dry_run_sql_builds_the_schema_and_migrate_false_then_starts(
    url: str, schema: str, conn: asyncpg.Connection
) -> None:
    with pytest.raises(ConfigurationError, match="migrate=false"):
        async with asyncq.App(f"{url}&migrate=false"):
            pass
    sql = run_asyncq("db", "upgrade", "apps.good:app", "--broker", url, "--dry-run")
    assert sql.stdout.startswith("BEGIN;")
    assert await conn.fetchval("SELECT to_regnamespace($1)", schema) is None  # nothing done
    await conn.execute(sql.stdout)  # as a team's migration tool would
    again = run_asyncq("db", "upgrade", "apps.good:app", "--broker", url, "--dry-run")
    assert "up to date" in again.stdout
    app = asyncq.App(f"{url}&migrate=false")

    @app.task(name="t")
    async def t() -> int:
        return 7

    async with app:
        job = await t.enqueue()
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: app.run_worker(burst=True))
        assert await job.result(timeout=10) == 7


async def test_db_upgrade_applies_and_then_finds_nothing(
    url: str, schema: str, conn: asyncpg.Connection
) -> None:
    done = run_asyncq("db", "upgrade", "apps.good:app", "--broker", url)
    assert done.stdout.strip() == f"applied {SCHEMA_VERSION} migration(s)"
    done = run_asyncq("db", "upgrade", "apps.good:app", "--broker", url)
    assert done.stdout.strip() == "the schema is up to date"


async def test_a_schema_migrated_by_a_newer_asyncq_is_refused(
    url: str, schema: str, conn: asyncpg.Connection
) -> None:
    async with asyncq.App(url):
        pass
    await conn.execute(f'INSERT INTO "{schema}".migrations (version) VALUES ($1)', 999)
    with pytest.raises(ConfigurationError, match="newer asyncq"):
        async with asyncq.App(url):
            pass


def test_db_upgrade_on_another_broker_is_a_usage_error() -> None:
    tests = os.path.dirname(os.path.abspath(services.__file__))
    done = subprocess.run(
        [sys.executable, "-m", "asyncq", "db", "upgrade", "apps.good:app", "--broker", "memory://x"],
        cwd=tests, capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": tests},
    )  # fmt: skip
    assert done.returncode == 2
    assert "has no schema to migrate" in done.stderr
