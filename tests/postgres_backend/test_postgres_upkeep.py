"""What keeps a ``postgresql://`` broker's tables small: finished jobs' rows deleted once
their records expire (with the idempotency keys they held), the small tables' stale rows
swept in one round trip, fresh ones left alone; and a warning from the worker when
autovacuum, which reclaims the deleted rows, is off."""

from __future__ import annotations

import logging
import time

import anyio
import asyncpg
import pytest
from asyncq_postgres import upkeep

import asyncq

from .postgres_support import PrivatePostgres

pytestmark = pytest.mark.anyio


async def _count(conn: asyncpg.Connection, schema: str, table: str) -> int:
    return int(await conn.fetchval(f'SELECT count(*) FROM "{schema}".{table}'))


async def test_finished_rows_are_deleted_once_their_records_expire(
    url: str, schema: str, conn: asyncpg.Connection
) -> None:
    app = asyncq.App(f"{url}&result_ttl=0.5")

    @app.task
    async def job(n: int) -> int:
        return n

    async with app:
        jobs = await job.enqueue_many([(i,) for i in range(3000)])
        keyed = await job.options(key="once").enqueue(-1)
        async with app.worker(concurrency=50):
            assert await jobs[-1].result(timeout=30) == 2999
            assert await keyed.result(timeout=30) == -1
            # Expired 0.5 s after each finish; the worker's upkeep (every second) deletes
            # them in batches of upkeep.EXPIRE_BATCH.
            with anyio.fail_after(10):
                while await _count(conn, schema, "jobs"):  # noqa: ASYNC110 - no event for it
                    await anyio.sleep(0.1)
        with pytest.raises(asyncq.JobNotFound):
            await jobs[0].status()
        again = await job.options(key="once").enqueue(-2)  # the key is free again
        assert again.id != keyed.id


async def test_the_sweep_deletes_stale_rows_of_every_small_table_and_keeps_fresh_ones(
    url: str, schema: str, conn: asyncpg.Connection
) -> None:
    async with asyncq.App(url):  # creates the schema
        pass
    s, now = f'"{schema}"', time.time()
    old, recent = now - 3600.0, now - 0.5
    soon = now + 60.0
    for at, tag in ((old, "stale"), (recent, "fresh")):
        until = old if tag == "stale" else soon
        await conn.execute(f"INSERT INTO {s}.cancellations (job_id, at) VALUES ($1, $2)", tag, at)
        await conn.execute(f"INSERT INTO {s}.slot_claims VALUES ($1, 1, $2, 'j')", tag, until)
        await conn.execute(f"INSERT INTO {s}.rate_permits VALUES ($1, $2)", tag, until)
        await conn.execute(f"INSERT INTO {s}.rate_waiters VALUES ($1, 't', $2)", tag, at)
        await conn.execute(f"INSERT INTO {s}.concurrency_holders VALUES ($1, 'h', $2)", tag, until)
        await conn.execute(f"INSERT INTO {s}.concurrency_waiters VALUES ($1, 'h', $2)", tag, at)
        await conn.execute(f"INSERT INTO {s}.concurrency_keys VALUES ($1, NULL, $2)", tag, at)
        # A line whose every ticket started (head > issued), quiet since `at`.
        await conn.execute(f"INSERT INTO {s}.order_lines VALUES ($1, 3, 4, $2)", tag, at)
        await conn.execute(f"INSERT INTO {s}.order_voided VALUES ($1, 9)", tag)
    # A quiet key that still has a holder stays, and so does its line's voided ticket.
    await conn.execute(f"INSERT INTO {s}.concurrency_keys VALUES ('held', NULL, $1)", old)
    await conn.execute(f"INSERT INTO {s}.concurrency_holders VALUES ('held', 'h', $1)", soon)

    await upkeep.sweep(conn, s, now)

    for table, column in (
        ("cancellations", "job_id"),
        ("slot_claims", "schedule"),
        ("rate_permits", "key"),
        ("rate_waiters", "key"),
        ("concurrency_waiters", "key"),
        ("order_lines", "key"),
        ("order_voided", "key"),
    ):
        left = await conn.fetch(f"SELECT {column} FROM {s}.{table}")
        assert [r[0] for r in left] == ["fresh"], table
    holders = await conn.fetch(f"SELECT key FROM {s}.concurrency_holders ORDER BY key")
    assert [r[0] for r in holders] == ["fresh", "held"]
    keys = await conn.fetch(f"SELECT key FROM {s}.concurrency_keys ORDER BY key")
    assert [r[0] for r in keys] == ["fresh", "held"]


async def test_a_worker_warns_when_autovacuum_is_off_for_the_jobs_table(
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = PrivatePostgres()  # initdb's defaults: autovacuum on
    try:
        server.start()
        caplog.set_level(logging.WARNING, logger="asyncq.postgres")
        app = asyncq.App(server.url)
        async with app:  # creates the schema
            pass
        conn = await asyncpg.connect(server.url)
        try:
            await upkeep.warn_without_autovacuum(conn, '"asyncq"')
            assert caplog.records == []
            await conn.execute("ALTER TABLE asyncq.jobs SET (autovacuum_enabled = false)")
        finally:
            await conn.close()
        async with app, app.worker(concurrency=1):
            with anyio.fail_after(10):
                while not caplog.records:  # noqa: ASYNC110 - a log record sends no event
                    await anyio.sleep(0.02)
        (warning,) = [r.getMessage() for r in caplog.records]
        assert 'autovacuum is off on "asyncq".jobs' in warning
    finally:
        server.remove()
