"""Cancellation: a queued job cancelled never runs; a running one has its scope cancelled
and ends CANCELLED, never retried; a finished job cannot be cancelled."""

from __future__ import annotations

import anyio
import pytest

import asyncq
from asyncq import JobStatus

pytestmark = [pytest.mark.anyio, pytest.mark.needs_store]


async def test_cancelled_queued_and_scheduled_jobs_never_run(app: asyncq.App) -> None:
    ran: list[str] = []

    @app.task
    async def record(name: str) -> None:
        ran.append(name)

    async with app:
        queued = await record.enqueue("queued")
        scheduled = await record.options(delay=0.2).enqueue("scheduled")
        kept = await record.options(delay=0.3).enqueue("kept")
        assert await queued.cancel()
        assert await scheduled.cancel()
        async with app.worker(concurrency=2):
            await kept.result(timeout=5)
        for job in (queued, scheduled):
            assert await job.status() is JobStatus.CANCELLED
            with pytest.raises(asyncq.JobCancelled):
                await job.result(timeout=1)
        stats = (await app.queue_stats([app.default_queue]))[app.default_queue]
        assert (stats.pending, stats.scheduled, stats.running) == (0, 0, 0)
    assert ran == ["kept"]


async def test_cancelled_running_job_sees_cancellation_and_is_not_retried(
    app: asyncq.App,
) -> None:
    started, saw_cancel = anyio.Event(), anyio.Event()
    runs = 0

    @app.task(retries=3)
    async def stuck() -> None:
        nonlocal runs
        runs += 1
        started.set()
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            saw_cancel.set()
            raise

    @app.task
    async def after() -> str:
        return "worker still runs"

    async with app, app.worker(concurrency=1):
        job = await stuck.enqueue()
        with anyio.fail_after(5):
            await started.wait()
        assert await job.cancel()
        with pytest.raises(asyncq.JobCancelled):
            await job.result(timeout=5)
        assert saw_cancel.is_set()
        assert await job.status() is JobStatus.CANCELLED
        assert await (await after.enqueue()).result(timeout=5) == "worker still runs"
    assert runs == 1


async def test_cancel_of_a_finished_job_returns_false(app: asyncq.App) -> None:
    @app.task
    async def noop() -> None:
        pass

    @app.task
    async def refuse() -> None:
        raise asyncq.Reject("no")

    async with app, app.worker(concurrency=1):
        done = await noop.enqueue()
        await done.result(timeout=5)
        dead = await refuse.enqueue()
        with pytest.raises(asyncq.JobFailed):
            await dead.result(timeout=5)
        cancelled = await noop.options(delay=60).enqueue()
        assert await cancelled.cancel()

        assert not await done.cancel()
        assert not await dead.cancel()
        assert not await cancelled.cancel()
        assert await done.status() is JobStatus.SUCCEEDED
        assert await dead.status() is JobStatus.DEAD
