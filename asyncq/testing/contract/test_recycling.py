"""Worker recycling: a worker with ``max_jobs`` takes exactly that many jobs, runs every one
of them, and returns with ``recycled`` saying why; the jobs it did not take wait in the
queue, unstarted and with no attempt spent, for the next worker."""

from __future__ import annotations

import anyio
import pytest

import asyncq
from asyncq import current_job
from asyncq.worker import Worker

pytestmark = pytest.mark.anyio


async def test_max_jobs_takes_that_many_runs_them_all_and_leaves_the_rest(app: asyncq.App) -> None:
    ran: list[tuple[int, int]] = []

    @app.task
    async def job(n: int) -> None:
        ran.append((n, current_job().attempt))

    async with app:
        await job.enqueue_many([(n,) for n in range(12)])
        # concurrency 4 prefetches one more: the last job taken may be waiting for a
        # runner when the budget is spent, and runs all the same.
        worker = Worker(app, concurrency=4, max_jobs=5)
        with anyio.fail_after(20):
            await worker.run()
        assert worker.recycled is not None and "max_jobs" in worker.recycled
        assert worker.processed == 5
        assert len(ran) == 5
        with anyio.fail_after(20):
            await app.run_worker(concurrency=4, burst=True)
        stats = (await app.queue_stats([app.default_queue]))[app.default_queue]
    assert sorted(n for n, _ in ran) == list(range(12))
    assert {attempt for _, attempt in ran} == {1}
    assert stats == asyncq.QueueStats(app.default_queue)


async def test_recycle_stops_gracefully_and_says_why(app: asyncq.App) -> None:
    started, release = anyio.Event(), anyio.Event()
    finished: list[int] = []

    @app.task
    async def job(n: int) -> None:
        started.set()
        await release.wait()
        finished.append(n)

    async with app:
        await job.enqueue(1)
        worker = Worker(app, concurrency=1, prefetch=0)
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.run)
            with anyio.fail_after(20):
                await started.wait()
            worker.recycle("a test asked")  # what the memory watch does past max_memory
            release.set()
        stats = (await app.queue_stats([app.default_queue]))[app.default_queue]
    assert worker.recycled == "a test asked"
    assert finished == [1]  # the job in flight finished
    assert stats == asyncq.QueueStats(app.default_queue)
