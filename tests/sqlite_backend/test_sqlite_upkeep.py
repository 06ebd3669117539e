"""What keeps a ``sqlite://`` file from growing: finished jobs' rows go once their records
expire, with the idempotency keys they held, and the WAL is checkpointed off the event
loop."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import anyio
import pytest

import asyncq
from asyncq.sqlite import database

pytestmark = pytest.mark.anyio


def _count(path: Path, table: str) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
    finally:
        conn.close()


async def test_finished_rows_are_deleted_once_their_records_expire(db_path: Path, url: str) -> None:
    app = asyncq.App(f"{url}?result_ttl=0.5")

    @app.task
    async def job(n: int) -> int:
        return n

    async with app:
        jobs = await job.enqueue_many([(i,) for i in range(3000)])
        keyed = await job.options(key="once").enqueue(-1)
        async with app.worker(concurrency=50):
            assert await jobs[-1].result(timeout=30) == 2999
            assert await keyed.result(timeout=30) == -1
            assert _count(db_path, "idempotency_keys") == 1
            # The records expire 0.5 s after each finish; the worker's upkeep (every second)
            # deletes them in batches.
            with anyio.fail_after(10):
                while _count(db_path, "jobs"):  # noqa: ASYNC110 - the upkeep sends no event
                    await anyio.sleep(0.1)
        assert _count(db_path, "idempotency_keys") == 0
        with pytest.raises(asyncq.JobNotFound):
            await jobs[0].status()
        # The key is free again.
        again = await job.options(key="once").enqueue(-2)
        assert again.id != keyed.id


async def test_the_wal_is_checkpointed_by_its_thread(
    db_path: Path, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A threshold of 10 pages, so a few hundred jobs pass it.
    monkeypatch.setattr(database, "CHECKPOINT_PAGES", 10)
    app = asyncq.App(url)

    @app.task
    async def job(n: int) -> int:
        return n

    async with app:
        await job.enqueue_many([(i,) for i in range(2000)])
        conn = sqlite3.connect(db_path)
        try:
            with anyio.fail_after(10):
                # Checkpointed: every frame of the WAL is in the database file.
                while True:
                    busy, frames, copied = conn.execute("PRAGMA wal_checkpoint(NOOP)").fetchone()
                    if frames > 0 and copied == frames:
                        break
                    await anyio.sleep(0.05)  # the thread sends no event
        finally:
            conn.close()
