"""Retries: a failing job runs again with backoff until ``retries`` is spent, then it is
dead-lettered with its error; ``Retry`` asks for a retry after a given delay; ``Reject``
dead-letters at once."""

from __future__ import annotations

import time

import pytest

import asyncq
from asyncq import JobStatus, current_job
from asyncq.backend import Outcome
from asyncq.testing import Recorded, SettleLog

pytestmark = pytest.mark.anyio

RETRIED_TWICE_THEN_DEAD = [Outcome.RETRY, Outcome.RETRY, Outcome.DEAD]


async def test_job_that_fails_twice_succeeds_on_the_third_attempt(
    app: asyncq.App, settled: SettleLog, recorded: Recorded
) -> None:
    attempts: list[int] = []
    contexts: set[tuple[str, float]] = set()

    @app.task(retries=3)
    async def flaky() -> str:
        job = current_job()
        attempts.append(job.attempt)
        contexts.add((job.id, job.enqueued_at))
        if len(attempts) < 3:
            raise ConnectionError("downstream is down")
        return "ok"

    async with app, app.worker(concurrency=1):
        job = await flaky.enqueue()
        outcomes = await settled.wait(job.id, 3)
        await recorded.result(job, "ok")
        await recorded.status(job, JobStatus.SUCCEEDED)
    assert outcomes == [Outcome.RETRY, Outcome.RETRY, Outcome.SUCCEEDED]
    assert attempts == [1, 2, 3]
    # Every attempt is the same job: same id, same enqueue time.
    ((job_id, _),) = contexts
    assert job_id == job.id


async def test_retry_with_a_delay_runs_again_after_that_delay(
    app: asyncq.App, settled: SettleLog, recorded: Recorded
) -> None:
    delay = 0.3
    ran_at: list[float] = []

    @app.task(retries=1)
    async def later() -> int:
        ran_at.append(time.monotonic())
        if current_job().attempt == 1:
            raise asyncq.Retry(delay=delay)
        return current_job().attempt

    async with app, app.worker(concurrency=1):
        job = await later.enqueue()
        assert await settled.wait(job.id, 2) == [Outcome.RETRY, Outcome.SUCCEEDED]
        await recorded.result(job, 2)
    gap = ran_at[1] - ran_at[0]
    assert delay <= gap <= delay + max(0.1 * delay, 0.1)


async def test_retry_counts_against_the_retries(
    app: asyncq.App, settled: SettleLog, recorded: Recorded
) -> None:
    attempts: list[int] = []

    @app.task(retries=2)
    async def again() -> None:
        attempts.append(current_job().attempt)
        raise asyncq.Retry(delay=0)

    async with app, app.worker(concurrency=1):
        job = await again.enqueue()
        assert await settled.wait(job.id, 3) == RETRIED_TWICE_THEN_DEAD
        await recorded.failed(job)
    assert attempts == [1, 2, 3]


async def test_exhausted_job_is_dead_lettered_with_its_error(
    app: asyncq.App, settled: SettleLog, recorded: Recorded
) -> None:
    attempts: list[int] = []

    @app.task(retries=2)
    async def broken(order: int) -> None:
        attempts.append(current_job().attempt)
        raise ValueError(f"order {order} is invalid")

    async with app, app.worker(concurrency=1):
        job = await broken.enqueue(7)
        assert await settled.wait(job.id, 3) == RETRIED_TWICE_THEN_DEAD
        if failed := await recorded.failed(job):
            assert failed.job_id == job.id
            assert failed.error is not None
            assert failed.error.type == "ValueError"
        await recorded.status(job, JobStatus.DEAD)
        (dead,) = await app.dead_letters()
        assert (await app.queue_stats([app.default_queue]))[app.default_queue].dead == 1
    assert attempts == [1, 2, 3]
    assert dead.id == job.id
    assert dead.task == broken.name
    assert dead.queue == app.default_queue
    assert dead.error.type == "ValueError"
    assert dead.error.message == "order 7 is invalid"
    assert "ValueError: order 7 is invalid" in dead.error.traceback
    assert "in broken" in dead.error.traceback  # the handler's own frame


async def test_reject_dead_letters_at_once_without_retrying(
    app: asyncq.App, settled: SettleLog, recorded: Recorded
) -> None:
    attempts: list[int] = []

    @app.task(retries=5)
    async def refuse() -> None:
        attempts.append(current_job().attempt)
        raise asyncq.Reject("card declined")

    async with app, app.worker(concurrency=1):
        job = await refuse.enqueue()
        assert await settled.wait(job.id) == [Outcome.DEAD]
        await recorded.failed(job, match="card declined")
        (dead,) = await app.dead_letters()
        await recorded.status(job, JobStatus.DEAD)
    assert attempts == [1]
    assert dead.id == job.id
    assert dead.error.type == "Reject"
    assert dead.error.message == "card declined"
