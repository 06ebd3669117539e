"""Retries: a failing job runs again with backoff until ``retries`` is spent, then it is
dead-lettered with its error; ``Retry`` asks for a retry after a given delay; ``Reject``
dead-letters at once."""

from __future__ import annotations

import time

import pytest

import asyncq
from asyncq import JobStatus, current_job

pytestmark = [pytest.mark.anyio, pytest.mark.needs_store]


async def test_job_that_fails_twice_succeeds_on_the_third_attempt(app: asyncq.App) -> None:
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
        assert await job.result(timeout=5) == "ok"
        info = await job.info()
    assert attempts == [1, 2, 3]
    assert info.status is JobStatus.SUCCEEDED
    # Every attempt is the same job: same id, same enqueue time.
    ((job_id, _),) = contexts
    assert job_id == job.id


async def test_retry_with_a_delay_runs_again_after_that_delay(app: asyncq.App) -> None:
    delay = 0.3
    ran_at: list[float] = []

    @app.task(retries=1)
    async def later() -> int:
        ran_at.append(time.monotonic())
        if current_job().attempt == 1:
            raise asyncq.Retry(delay=delay)
        return current_job().attempt

    async with app, app.worker(concurrency=1):
        assert await (await later.enqueue()).result(timeout=5) == 2
    gap = ran_at[1] - ran_at[0]
    assert delay <= gap <= delay + max(0.1 * delay, 0.1)


async def test_retry_counts_against_the_retries(app: asyncq.App) -> None:
    attempts: list[int] = []

    @app.task(retries=2)
    async def again() -> None:
        attempts.append(current_job().attempt)
        raise asyncq.Retry(delay=0)

    async with app, app.worker(concurrency=1):
        job = await again.enqueue()
        with pytest.raises(asyncq.JobFailed):
            await job.result(timeout=5)
    assert attempts == [1, 2, 3]


async def test_exhausted_job_is_dead_lettered_with_its_error(app: asyncq.App) -> None:
    attempts: list[int] = []

    @app.task(retries=2)
    async def broken(order: int) -> None:
        attempts.append(current_job().attempt)
        raise ValueError(f"order {order} is invalid")

    async with app, app.worker(concurrency=1):
        job = await broken.enqueue(7)
        with pytest.raises(asyncq.JobFailed) as failed:
            await job.result(timeout=5)
        assert await job.status() is JobStatus.DEAD
        (dead,) = await app.dead_letters()
    assert attempts == [1, 2, 3]
    assert failed.value.job_id == job.id
    assert failed.value.error is not None
    assert failed.value.error.type == "ValueError"
    assert dead.id == job.id
    assert dead.task == broken.name
    assert dead.queue == app.default_queue
    assert dead.error.type == "ValueError"
    assert dead.error.message == "order 7 is invalid"
    assert "ValueError: order 7 is invalid" in dead.error.traceback
    assert "in broken" in dead.error.traceback  # the handler's own frame


async def test_reject_dead_letters_at_once_without_retrying(app: asyncq.App) -> None:
    attempts: list[int] = []

    @app.task(retries=5)
    async def refuse() -> None:
        attempts.append(current_job().attempt)
        raise asyncq.Reject("card declined")

    async with app, app.worker(concurrency=1):
        job = await refuse.enqueue()
        with pytest.raises(asyncq.JobFailed, match="card declined"):
            await job.result(timeout=5)
        (dead,) = await app.dead_letters()
        assert await job.status() is JobStatus.DEAD
    assert attempts == [1]
    assert dead.id == job.id
    assert dead.error.type == "Reject"
    assert dead.error.message == "card declined"
