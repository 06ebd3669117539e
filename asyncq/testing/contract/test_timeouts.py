"""Timeouts: a handler that outlives its task's ``timeout`` is cancelled, and the attempt
counts as a failure: retried, then dead-lettered."""

from __future__ import annotations

import time

import anyio
import pytest

import asyncq
from asyncq import JobStatus, current_job
from asyncq.backend import Outcome
from asyncq.testing import Recorded, SettleLog

pytestmark = pytest.mark.anyio


async def test_timed_out_job_fails_retries_and_dies(
    app: asyncq.App, settled: SettleLog, recorded: Recorded
) -> None:
    attempts: list[int] = []
    cancelled: list[int] = []

    @app.task(timeout=0.2, retries=1)
    async def slow() -> None:
        attempts.append(current_job().attempt)
        try:
            await anyio.sleep(5)
        except anyio.get_cancelled_exc_class():
            cancelled.append(current_job().attempt)
            raise

    async with app, app.worker(concurrency=1):
        started = time.monotonic()
        job = await slow.enqueue()
        assert await settled.wait(job.id, 2) == [Outcome.RETRY, Outcome.DEAD]
        took = time.monotonic() - started
        await recorded.failed(job, match="TimeoutError")
        if info := await recorded.info(job):
            assert info.status is JobStatus.DEAD
            assert info.error is not None and info.error.type == "TimeoutError"
        (dead,) = await app.dead_letters()
    assert took < 2.0  # two 0.2 s attempts, nowhere near the 5 s sleep
    assert attempts == cancelled == [1, 2]
    assert (dead.id, dead.error.type) == (job.id, "TimeoutError")


async def test_timed_out_attempt_is_retried_and_can_succeed(
    app: asyncq.App, settled: SettleLog, recorded: Recorded
) -> None:
    @app.task(timeout=0.2, retries=2)
    async def slow_once() -> int:
        attempt = current_job().attempt
        if attempt == 1:
            await anyio.sleep(5)
        return attempt

    async with app, app.worker(concurrency=1):
        job = await slow_once.enqueue()
        assert await settled.wait(job.id, 2) == [Outcome.RETRY, Outcome.SUCCEEDED]
        await recorded.result(job, 2)
