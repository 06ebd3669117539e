"""``Backend.run_now``: a job waiting for its time (delayed, or waiting for a retry) is made
due now and a worker runs it at once; a job that is not waiting is left alone."""

from __future__ import annotations

import anyio
import pytest

import asyncq
from asyncq.backend import Outcome
from asyncq.testing import SettleLog

pytestmark = [pytest.mark.anyio, pytest.mark.needs_run_now]


async def test_a_delayed_and_a_retrying_job_run_now(app: asyncq.App, settled: SettleLog) -> None:
    ran: list[str] = []
    failed_once = anyio.Event()

    @app.task(retries=2, backoff=asyncq.Backoff(base=3600, jitter=False))
    async def deliver(what: str) -> str:
        ran.append(what)
        if what == "flaky" and not failed_once.is_set():
            failed_once.set()
            raise ConnectionError("try again in an hour")
        return what

    async with app:
        queue = app.default_queue
        later = await deliver.options(delay=3600).enqueue("later")
        flaky = await deliver.enqueue("flaky")
        async with app.worker(concurrency=2):
            await settled.wait(flaky.id)  # its retry waits an hour
            assert await app.backend.run_now(queue, later.id)
            assert await app.backend.run_now(queue, flaky.id)
            assert await settled.wait(later.id, timeout=10) == [Outcome.SUCCEEDED]
            assert await settled.wait(flaky.id, 2, timeout=10) == [Outcome.RETRY, Outcome.SUCCEEDED]
            # Nothing waits any more: a finished, an unknown job are left alone.
            assert not await app.backend.run_now(queue, later.id)
            assert not await app.backend.run_now(queue, "0" * 32)
    assert sorted(ran) == ["flaky", "flaky", "later"]


async def test_a_queued_job_is_not_waiting(app: asyncq.App) -> None:
    @app.task
    async def work() -> None:
        pass

    async with app:
        job = await work.enqueue()
        assert not await app.backend.run_now(app.default_queue, job.id)
        assert (await app.queue_stats([app.default_queue]))[app.default_queue].pending == 1
