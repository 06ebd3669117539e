"""``current_job()``: inside a handler, the job's id, task, queue, attempt, redelivered flag,
enqueue time, headers and the time it was scheduled for; outside one, a RuntimeError."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import anyio
import pytest

import asyncq
from asyncq import JobContext, current_job
from asyncq.backend import Outcome
from asyncq.testing import SettleLog

pytestmark = pytest.mark.anyio


async def test_current_job_describes_the_running_job(app: asyncq.App, settled: SettleLog) -> None:
    seen: list[JobContext] = []

    @app.task(queue="reports")
    async def report() -> None:
        seen.append(current_job())

    async with app, app.worker(concurrency=1, queues=["reports", "other"]):
        before = time.time()
        job = await report.options(headers={"x-tenant": "acme"}).enqueue()
        after = time.time()
        other = await report.options(queue="other").enqueue()
        assert await settled.wait(job.id) == [Outcome.SUCCEEDED]
        assert await settled.wait(other.id) == [Outcome.SUCCEEDED]
    by_id = {ctx.id: ctx for ctx in seen}
    assert set(by_id) == {job.id, other.id}
    first, second = by_id[job.id], by_id[other.id]
    assert first.id == job.id
    assert first.task == report.name
    assert first.queue == "reports"
    assert first.attempt == 1
    assert first.redelivered is False
    assert before <= first.enqueued_at <= after
    assert first.headers["x-tenant"] == "acme"
    assert first.scheduled_for is None  # it was to run at once
    assert second.id == other.id
    assert second.queue == "other"
    assert "x-tenant" not in second.headers


async def test_current_job_is_per_job_among_concurrent_jobs(
    app: asyncq.App, settled: SettleLog
) -> None:
    seen: dict[int, str] = {}

    @app.task
    async def which(n: int) -> None:
        await anyio.sleep(0.01)  # let the other jobs interleave
        seen[n] = current_job().id

    async with app, app.worker(concurrency=10):
        jobs = await which.enqueue_many([(n,) for n in range(10)])
        for job in jobs:
            assert await settled.wait(job.id) == [Outcome.SUCCEEDED]
    assert seen == {n: job.id for n, job in enumerate(jobs)}


async def test_scheduled_for_is_a_delayed_jobs_time_and_survives_retries_and_snoozes(
    app: asyncq.App, settled: SettleLog
) -> None:
    seen: list[tuple[int, datetime | None]] = []

    @app.task(retries=1)
    async def remind() -> None:
        job = current_job()
        seen.append((job.attempt, job.scheduled_for))
        if len(seen) == 1:
            raise asyncq.Snooze(0)
        if len(seen) == 2:
            raise asyncq.Retry(delay=0)

    at = datetime.now(UTC) + timedelta(seconds=0.2)
    async with app, app.worker(concurrency=1):
        job = await remind.options(at=at).enqueue()
        outcomes = await settled.wait(job.id, 3)
    assert outcomes == [Outcome.SNOOZE, Outcome.RETRY, Outcome.SUCCEEDED]
    assert [attempt for attempt, _ in seen] == [1, 1, 2]
    for _, scheduled_for in seen:
        assert scheduled_for is not None and scheduled_for.tzinfo is UTC
        assert abs((scheduled_for - at).total_seconds()) < 0.001, (scheduled_for, at)


def test_current_job_outside_a_handler_is_a_runtime_error() -> None:
    with pytest.raises(RuntimeError, match="outside"):
        current_job()
