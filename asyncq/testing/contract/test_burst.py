"""Burst mode: the worker returns once its queues are drained, pending retries and delayed
jobs included (their delays here are longer than an idle burst worker's fetch wait)."""

from __future__ import annotations

import anyio
import pytest

import asyncq
from asyncq import JobStatus, current_job
from asyncq.backend import Outcome
from asyncq.testing import Recorded, SettleLog

pytestmark = pytest.mark.anyio


async def test_burst_worker_returns_when_the_queues_are_drained(
    app: asyncq.App, settled: SettleLog, recorded: Recorded
) -> None:
    done: list[str] = []

    @app.task(retries=2)
    async def work(name: str) -> None:
        if name == "flaky" and current_job().attempt == 1:
            raise asyncq.Retry(delay=0.4)
        done.append(name)

    async with app:
        plain = await work.enqueue("plain")
        flaky = await work.enqueue("flaky")
        delayed = await work.options(delay=0.6).enqueue("delayed")
        with anyio.fail_after(10):
            await app.run_worker(concurrency=2, burst=True)
        assert settled.outcomes == {
            plain.id: [Outcome.SUCCEEDED],
            flaky.id: [Outcome.RETRY, Outcome.SUCCEEDED],
            delayed.id: [Outcome.SUCCEEDED],
        }
        for job in (plain, flaky, delayed):
            await recorded.status(job, JobStatus.SUCCEEDED)
        stats = (await app.queue_stats([app.default_queue]))[app.default_queue]
        assert stats == asyncq.QueueStats(app.default_queue)
    assert sorted(done) == ["delayed", "flaky", "plain"]


async def test_burst_worker_on_empty_queues_returns_at_once(app: asyncq.App) -> None:
    @app.task
    async def noop() -> None:
        pass

    with anyio.fail_after(5):
        await app.run_worker(burst=True)
