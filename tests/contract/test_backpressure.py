"""Backpressure: a worker never runs, nor is handed, more jobs than its concurrency."""

from __future__ import annotations

from collections.abc import Sequence

import anyio
import pytest

import asyncq
from asyncq.backend import Delivery

pytestmark = pytest.mark.anyio


async def test_concurrency_bounds_running_handlers_and_fetched_jobs(
    app: asyncq.App, monkeypatch: pytest.MonkeyPatch
) -> None:
    concurrency, total = 5, 30
    running = 0
    most_running = 0

    @app.task
    async def work(n: int) -> int:
        nonlocal running, most_running
        running += 1
        most_running = max(most_running, running)
        try:
            await anyio.sleep(0.02)  # the work itself
        finally:
            running -= 1
        return n

    worker = asyncq.Worker(app, concurrency=concurrency, burst=True)
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
        assert [await job.result(timeout=1) for job in jobs] == list(range(total))
    assert most_running == concurrency
    assert max(held) == concurrency
    assert worker.processed == total
