"""Status transitions: QUEUED, SCHEDULED, RUNNING, SUCCEEDED, FAILED, DEAD, CANCELLED."""

from __future__ import annotations

import time

import anyio
import pytest

import asyncq
from asyncq import JobStatus
from asyncq.testing import SettleLog

pytestmark = [pytest.mark.anyio, pytest.mark.needs_store]


async def test_queued_then_running_then_succeeded(app: asyncq.App) -> None:
    started, release = anyio.Event(), anyio.Event()

    @app.task
    async def work() -> str:
        started.set()
        await release.wait()
        return "ok"

    async with app:
        job = await work.enqueue()
        info = await job.info()
        assert info.status is JobStatus.QUEUED
        assert info.task == work.name
        assert info.queue == app.default_queue
        assert info.attempt == 1
        async with app.worker(concurrency=1):
            with anyio.fail_after(5):
                await started.wait()
            assert await job.status() is JobStatus.RUNNING
            release.set()
            assert await job.result(timeout=5) == "ok"
            assert await job.status() is JobStatus.SUCCEEDED


async def test_delayed_job_is_scheduled_with_its_eta(app: asyncq.App) -> None:
    @app.task
    async def later() -> None:
        pass

    async with app:
        before = time.time()
        job = await later.options(delay=60).enqueue()
        info = await job.info()
        assert info.status is JobStatus.SCHEDULED
        assert info.eta is not None
        assert before + 60 <= info.eta <= time.time() + 60


async def test_failed_attempt_is_failed_with_the_retry_eta_and_error(
    app: asyncq.App, settled: SettleLog
) -> None:
    @app.task(retries=3, backoff=asyncq.Backoff(base=60, jitter=False))
    async def flaky() -> None:
        raise ValueError("try again")

    async with app, app.worker(concurrency=1):
        before = time.time()
        job = await flaky.enqueue()
        await settled.wait(job.id)
        info = await job.info()
        assert info.status is JobStatus.FAILED
        assert info.eta is not None
        assert before + 60 <= info.eta <= time.time() + 60
        assert info.error is not None
        assert info.error.type == "ValueError"
        assert info.error.message == "try again"
        # A pending retry can be cancelled like any scheduled job.
        assert await job.cancel()
        assert await job.status() is JobStatus.CANCELLED


async def test_exhausted_job_is_dead(app: asyncq.App) -> None:
    @app.task(retries=0)
    async def broken() -> None:
        raise RuntimeError("no")

    async with app, app.worker(concurrency=1):
        job = await broken.enqueue()
        with pytest.raises(asyncq.JobFailed):
            await job.result(timeout=5)
        info = await job.info()
        assert info.status is JobStatus.DEAD
        assert info.error is not None and info.error.type == "RuntimeError"


async def test_cancelled_job_is_cancelled(app: asyncq.App) -> None:
    @app.task
    async def noop() -> None:
        pass

    async with app:
        job = await noop.enqueue()
        assert await job.cancel()
        assert await job.status() is JobStatus.CANCELLED


def test_finished_statuses() -> None:
    finished = {s for s in JobStatus if s.finished}
    assert finished == {JobStatus.SUCCEEDED, JobStatus.DEAD, JobStatus.CANCELLED}


async def test_record_counts_attempts(app: asyncq.App) -> None:
    failures = {"flaky": 1, "doomed": 99}

    @app.task(retries=2)
    async def work(name: str) -> str:
        if failures[name] > 0:
            failures[name] -= 1
            raise RuntimeError(f"{name} failed")
        return name

    async with app, app.worker(concurrency=2):
        flaky, doomed = await work.enqueue("flaky"), await work.enqueue("doomed")
        assert await flaky.result(timeout=5) == "flaky"
        with pytest.raises(asyncq.JobFailed):
            await doomed.result(timeout=5)
        assert (await flaky.info()).attempt == 2
        info = await doomed.info()
        assert (info.status, info.attempt) == (JobStatus.DEAD, 3)
