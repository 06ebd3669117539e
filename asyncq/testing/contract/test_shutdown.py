"""Graceful shutdown: stop fetching, let in-flight jobs finish within ``shutdown_timeout``,
then give the rest back to the queue with their attempt number; ``stop(now=True)`` gives
them back at once; the worker deregisters."""

from __future__ import annotations

import time

import anyio
import pytest

import asyncq
from asyncq import JobStatus, current_job
from asyncq.backend import Outcome
from asyncq.records import WorkerInfo
from asyncq.testing import Recorded, SettleLog

pytestmark = pytest.mark.anyio


async def pending(app: asyncq.App) -> int:
    return (await app.queue_stats([app.default_queue]))[app.default_queue].pending


async def test_in_flight_job_finishes_within_the_shutdown_timeout(
    app: asyncq.App, settled: SettleLog, recorded: Recorded
) -> None:
    started = anyio.Event()

    @app.task
    async def work() -> str:
        started.set()
        await anyio.sleep(0.3)  # still running when the worker is told to stop
        return "finished"

    async with app:
        job = await work.enqueue()
        queued = await work.enqueue()
        worker = asyncq.Worker(app, concurrency=1, shutdown_timeout=5)
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                await tg.start(worker.run)
                await started.wait()
                worker.stop()
        assert settled.outcomes.get(job.id) == [Outcome.SUCCEEDED]
        await recorded.status(job, JobStatus.SUCCEEDED)
        await recorded.result(job, "finished", timeout=1)
        # Stopped workers fetch nothing more.
        assert await pending(app) == 1
        await recorded.status(queued, JobStatus.QUEUED)


async def test_job_still_running_after_the_timeout_is_released_with_its_attempt(
    app: asyncq.App, settled: SettleLog, recorded: Recorded
) -> None:
    shutdown_timeout = 0.3
    started, cancelled = anyio.Event(), anyio.Event()

    @app.task(retries=0)
    async def stuck() -> None:
        started.set()
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            cancelled.set()
            raise

    async with app:
        job = await stuck.enqueue()
        worker = asyncq.Worker(app, concurrency=1, shutdown_timeout=shutdown_timeout)
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                await tg.start(worker.run)
                await started.wait()
                stopped_at = time.monotonic()
                worker.stop()
        took = time.monotonic() - stopped_at
        assert cancelled.is_set()
        assert shutdown_timeout * 0.9 <= took <= shutdown_timeout + 1.0
        assert settled.outcomes.get(job.id) == [Outcome.RELEASE]
        if info := await recorded.info(job):
            assert info.status is JobStatus.QUEUED
            assert info.attempt == 1
        assert await pending(app) == 1


async def test_stop_now_releases_at_once(
    app: asyncq.App, settled: SettleLog, recorded: Recorded
) -> None:
    started = anyio.Event()
    attempts: list[int] = []

    @app.task
    async def stuck() -> str:
        attempts.append(current_job().attempt)
        if len(attempts) == 1:
            started.set()
            await anyio.sleep_forever()
        return "second run"

    async with app:
        job = await stuck.enqueue()
        worker = asyncq.Worker(app, concurrency=1, shutdown_timeout=30)
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                await tg.start(worker.run)
                await started.wait()
                worker.stop()  # the first stop waits for the job...
                stopped_at = time.monotonic()
                worker.stop(now=True)  # ...the second one does not
        assert time.monotonic() - stopped_at < 2.0
        assert await pending(app) == 1
        await recorded.status(job, JobStatus.QUEUED)
        async with app.worker(concurrency=1):
            assert await settled.wait(job.id, 2) == [Outcome.RELEASE, Outcome.SUCCEEDED]
            await recorded.result(job, "second run")
    assert attempts == [1, 1]


@pytest.mark.needs_store
async def test_worker_heartbeats_while_running_and_deregisters_when_stopped(
    app: asyncq.App, monkeypatch: pytest.MonkeyPatch
) -> None:
    beat = anyio.Event()
    real_heartbeat = app.backend.store.heartbeat

    async def heartbeat(worker: WorkerInfo, ttl: float) -> None:
        await real_heartbeat(worker, ttl)
        beat.set()

    monkeypatch.setattr(app.backend.store, "heartbeat", heartbeat)

    async with app:
        assert await app.backend.store.workers() == []
        async with app.worker(concurrency=3, queues=["default", "other"]) as worker:
            with anyio.fail_after(5):
                await beat.wait()
            (info,) = await app.backend.store.workers()
            assert info.id == worker.id
            assert info.concurrency == 3
            assert info.queues == ("default", "other")
        assert await app.backend.store.workers() == []


@pytest.mark.needs_store
async def test_the_worker_listing_follows_the_jobs_held_within_a_second(
    app: asyncq.App,
) -> None:
    holding, release = anyio.Event(), anyio.Event()

    @app.task
    async def hold() -> None:
        holding.set()
        await release.wait()

    async def listed_in_flight() -> int:
        (info,) = await app.backend.store.workers()
        return info.in_flight

    async with app, app.worker(concurrency=2, heartbeat_interval=60.0):
        job = await hold.enqueue()
        with anyio.fail_after(5):
            await holding.wait()
            # A heartbeat is not announced anywhere: look until the listing shows it. The
            # periodic beat is a minute away, so only the beat on a change can pass this.
            while await listed_in_flight() != 1:  # noqa: ASYNC110
                await anyio.sleep(0.05)
        release.set()
        await job.result(timeout=5)
        with anyio.fail_after(5):
            while await listed_in_flight() != 0:  # noqa: ASYNC110
                await anyio.sleep(0.05)
