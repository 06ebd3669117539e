"""Writers of other processes: a write waits for them, off the event loop's back, and a user
never sees ``database is locked``; a lock held past ``busy_timeout`` is a clear error."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import anyio
import pytest

import asyncq

pytestmark = pytest.mark.anyio


def _hold_write_lock(path: Path, seconds: float, held: anyio.Event | None = None) -> None:
    """Another connection (as another process would) holds the file's write lock."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO queues VALUES ('held')")
        if held is not None:
            anyio.from_thread.run_sync(held.set)
        time.sleep(seconds)
        conn.execute("COMMIT")
    finally:
        conn.close()


async def test_an_enqueue_waits_for_another_writer_and_the_event_loop_keeps_running(
    db_path: Path, url: str
) -> None:
    app = asyncq.App(url)

    @app.task
    async def job() -> None: ...

    async with app:
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await anyio.sleep(0.01)

        held = anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(anyio.to_thread.run_sync, _hold_write_lock, db_path, 0.5, held)
            await held.wait()
            tg.start_soon(tick)
            started = time.monotonic()
            enqueued = await job.enqueue()
            waited = time.monotonic() - started
            tg.cancel_scope.cancel()
        assert await enqueued.status() is asyncq.JobStatus.QUEUED
        # It waited for the lock, and meanwhile the loop served other tasks.
        assert waited >= 0.3, waited
        assert ticks >= 10, ticks
        assert app.backend._db.busy_waits > 0  # type: ignore[attr-defined]


async def test_a_lock_held_past_busy_timeout_is_a_broker_unavailable_error(
    db_path: Path, url: str
) -> None:
    app = asyncq.App(f"{url}?busy_timeout=0.2")

    @app.task
    async def job() -> None: ...

    async with app:
        held = anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(anyio.to_thread.run_sync, _hold_write_lock, db_path, 1.0, held)
            await held.wait()
            with pytest.raises(
                asyncq.BrokerUnavailable, match="locked by another connection for 0.2 s"
            ):
                await job.enqueue()
        # Nothing half-written: the job was not stored, and the next enqueue goes through.
        (stats,) = (await app.queue_stats([app.default_queue])).values()
        assert stats.pending == 0
        await job.enqueue()
        (stats,) = (await app.queue_stats([app.default_queue])).values()
        assert stats.pending == 1


async def test_full_synchronous_commits_on_a_thread_with_the_same_results(url: str) -> None:
    app = asyncq.App(f"{url}?synchronous=full")

    @app.task
    async def add(a: int, b: int) -> int:
        return a + b

    async with app, app.worker(concurrency=4):
        jobs = await add.enqueue_many([(i, i) for i in range(20)])
        assert [await j.result(timeout=10) for j in jobs] == [2 * i for i in range(20)]
