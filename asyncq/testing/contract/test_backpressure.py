"""Backpressure: a worker never runs more jobs than its concurrency, nor holds more than
its concurrency plus its prefetch."""

from __future__ import annotations

from collections.abc import Sequence

import anyio
import pytest

import asyncq
from asyncq.backend import Delivery, Outcome
from asyncq.testing import Recorded, SettleLog

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("prefetch", [0, 3])
async def test_concurrency_bounds_running_handlers_and_fetched_jobs(
    app: asyncq.App,
    monkeypatch: pytest.MonkeyPatch,
    settled: SettleLog,
    recorded: Recorded,
    prefetch: int,
) -> None:
    concurrency, total = 5, 30
    running = 0
    most_running = 0
    done: list[int] = []

    @app.task
    async def work(n: int) -> int:
        nonlocal running, most_running
        running += 1
        most_running = max(most_running, running)
        try:
            await anyio.sleep(0.02)  # the work itself
        finally:
            running -= 1
        done.append(n)
        return n

    worker = asyncq.Worker(app, concurrency=concurrency, prefetch=prefetch, burst=True)
    # How many jobs the worker holds after each fetch: those it runs plus those just handed.
    held: list[int] = []
    real_fetch = app.backend.fetch

    async def fetch(queues: Sequence[str], limit: int, *, timeout: float | None) -> list[Delivery]:
        deliveries = await real_fetch(queues, limit, timeout=timeout)
        assert len(deliveries) <= limit
        held.append(worker.in_flight + len(deliveries))
        return deliveries

    monkeypatch.setattr(app.backend, "fetch", fetch)

    async with app:
        jobs = await work.enqueue_many([(n,) for n in range(total)])
        with anyio.fail_after(20):
            await worker.run()
        for n, job in enumerate(jobs):
            await recorded.result(job, n, timeout=1)
    assert sorted(done) == list(range(total))
    assert {job.id: settled.outcomes.get(job.id) for job in jobs} == {
        job.id: [Outcome.SUCCEEDED] for job in jobs
    }
    assert most_running == concurrency
    assert max(held) == concurrency + prefetch
    assert worker.processed == total


async def test_prefetched_jobs_go_back_unstarted_on_shutdown(
    app: asyncq.App, settled: SettleLog, recorded: Recorded
) -> None:
    started: list[int] = []
    all_started = anyio.Event()

    @app.task
    async def work(n: int) -> None:
        started.append(n)
        if len(started) == 2:
            all_started.set()
        await anyio.sleep(0.3)

    async with app:
        jobs = await work.enqueue_many([(n,) for n in range(4)])
        async with app.worker(concurrency=2, prefetch=2, shutdown_timeout=5) as worker:
            with anyio.fail_after(5):
                await all_started.wait()
            assert worker.in_flight == 4  # two running, two waiting for a runner
        # The two that ran finished; the two prefetched went back without running.
        assert sorted(started) == [0, 1]
        outcomes = [settled.outcomes.get(job.id) for job in jobs]
        assert outcomes == [[Outcome.SUCCEEDED]] * 2 + [[Outcome.RELEASE]] * 2
        statuses = [asyncq.JobStatus.SUCCEEDED] * 2 + [asyncq.JobStatus.QUEUED] * 2
        for job, status in zip(jobs, statuses, strict=True):
            await recorded.status(job, status)
        assert (await app.queue_stats([app.default_queue]))[app.default_queue].pending == 2
