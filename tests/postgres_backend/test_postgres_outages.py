"""PostgreSQL restarted (a crash: ``pg_ctl stop -m immediate``, then recovery from its WAL)
under a busy worker and a producer: every confirmed job completes, none is lost, the worker
keeps going, and the producer sees ``BrokerUnavailable`` only while the server is down,
never asyncpg's own errors."""

from __future__ import annotations

import time

import anyio
import pytest
from harness import Runs, Settled, statuses

import asyncq
from asyncq import JobStatus, current_job

from .postgres_support import PrivatePostgres

pytestmark = pytest.mark.anyio

JOBS = 5_000
DOWN_FOR = 2.0


async def test_jobs_survive_a_postgres_restart(monkeypatch: pytest.MonkeyPatch) -> None:
    server = PrivatePostgres()
    try:
        server.start()
        app = asyncq.App(f"{server.url}?visibility_timeout=2", shutdown_timeout=5.0)
        runs = Runs()
        stopped = anyio.Event()

        @app.task
        async def work(n: int) -> int:
            runs.record(current_job().id)
            if n >= 1000 and not stopped.is_set():
                # Held until the server is down, however fast the worker drains: the crash
                # comes mid-run, with jobs running and most still queued.
                await stopped.wait()
            return n

        settled = Settled(monkeypatch, app.backend)
        produced: list[asyncq.Job[int]] = []
        errors: list[tuple[float, asyncq.BrokerError]] = []
        refused = anyio.Event()
        restarted = False
        down_at = up_at = 0.0

        async def produce() -> None:
            """Enqueue one job after another, and read stats, until the server is back."""
            while True:
                try:
                    produced.append(await work.enqueue(-1))
                    await app.queue_stats(["default"])
                except asyncq.BrokerError as exc:  # anything else fails the test
                    errors.append((time.monotonic(), exc))
                    refused.set()
                    await anyio.sleep(0.01)  # a producer's own back-off
                    continue
                if restarted:
                    return

        async with app:
            jobs = await work.enqueue_many([(n,) for n in range(JOBS)])
            async with app.worker(concurrency=50):
                await runs.reached(1000, timeout=30)
                down_at = time.monotonic()
                await anyio.to_thread.run_sync(server.stop, "immediate")
                runs_at_stop = runs.total
                stopped.set()
                async with anyio.create_task_group() as tg:
                    tg.start_soon(produce)
                    with anyio.fail_after(15):
                        await refused.wait()
                    await anyio.sleep(DOWN_FOR)
                    await anyio.to_thread.run_sync(server.start)
                    up_at = time.monotonic()
                    restarted = True
                everything = [*jobs, *produced]
                await settled.all_succeeded([job.id for job in everything], timeout=60)
            found = await statuses(app, everything)
            stats = (await app.queue_stats(["default"]))["default"]
    finally:
        server.remove()
    late = [t - up_at for t, _ in errors if t > up_at]
    print(
        f"{JOBS} jobs, PostgreSQL crashed and restarted: {runs.total} runs, "
        f"{runs.duplicates} duplicate(s); producer: {len(errors)} error(s) while down "
        f"({len(late)} after the restart, the last {max(late, default=0) * 1000:.0f} ms after), "
        f"{len(produced)} job(s) enqueued"
    )
    assert runs_at_stop < JOBS - 1000  # stopped mid-run: most jobs ran after the restart
    assert all(isinstance(exc, asyncq.BrokerUnavailable) for _, exc in errors), errors
    assert all(down_at <= t for t, _ in errors)
    # The pool's connections to the old server are found closed and replaced as they are
    # taken: no error outlives the restart by more than a moment.
    assert max(late, default=0.0) < 0.5, late
    assert produced  # the producer's enqueue worked again once the server was back
    assert set(runs.by_job) == {job.id for job in everything}
    assert found == {JobStatus.SUCCEEDED: len(everything)}  # none lost
    assert (stats.pending, stats.scheduled, stats.running, stats.dead) == (0, 0, 0, 0)
