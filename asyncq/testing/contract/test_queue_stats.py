"""``queue_stats``: per queue, how many jobs are pending, scheduled, running and dead."""

from __future__ import annotations

import time

import anyio
import pytest

import asyncq
from asyncq import QueueStats
from asyncq.testing import SettleLog

pytestmark = pytest.mark.anyio


async def test_queue_stats_count_pending_scheduled_running_and_dead(
    app: asyncq.App, settled: SettleLog
) -> None:
    started, release = anyio.Event(), anyio.Event()

    @app.task
    async def block() -> None:
        started.set()
        await release.wait()

    @app.task
    async def refuse() -> None:
        raise asyncq.Reject("no")

    @app.task(queue="other")
    async def elsewhere() -> None:
        pass

    q = app.default_queue

    async def stats() -> QueueStats:
        return (await app.queue_stats([q]))[q]

    async with app:
        assert await stats() == QueueStats(q, pending=0, scheduled=0, running=0, dead=0)
        blocked = await block.enqueue()
        refused = await refuse.enqueue()
        await block.options(delay=60).enqueue()
        await elsewhere.enqueue()
        assert await stats() == QueueStats(q, pending=2, scheduled=1, running=0, dead=0)

        async with app.worker(concurrency=1, queues=[q]):
            with anyio.fail_after(5):
                await started.wait()
            assert await stats() == QueueStats(q, pending=1, scheduled=1, running=1, dead=0)
            release.set()
            await settled.wait(blocked.id)
            await settled.wait(refused.id)
            assert await stats() == QueueStats(q, pending=0, scheduled=1, running=0, dead=1)

        every = await app.queue_stats()
        assert set(every) >= {q, "other"}
        assert every["other"] == QueueStats("other", pending=1)
        assert every[q] == await stats()


@pytest.mark.needs_lag
async def test_oldest_pending_age_is_how_long_the_first_waiting_job_has_waited(
    app: asyncq.App, settled: SettleLog
) -> None:
    started, release = anyio.Event(), anyio.Event()

    @app.task
    async def job(name: str) -> None:
        started.set()
        await release.wait()

    q = app.default_queue

    async def age() -> float | None:
        return (await app.queue_stats([q]))[q].oldest_pending_age

    async with app:
        assert await age() == 0.0  # nothing pending: no lag
        first_sent = time.time()
        first = await job.enqueue("first")
        await anyio.sleep(0.4)  # not a wait for something: the time being measured
        second_sent = time.time()
        second = await job.enqueue("second")
        lag = await age()
        assert lag is not None
        assert 0.4 - 0.01 <= lag <= time.time() - first_sent + 0.01
        async with app.worker(concurrency=1, prefetch=0, queues=[q]):
            with anyio.fail_after(5):
                await started.wait()  # "first" runs: "second" is now the oldest waiting
            lag = await age()
            assert lag is not None
            assert lag <= time.time() - second_sent + 0.01
            assert lag < 0.4
            release.set()
            for done in (first, second):
                await settled.wait(done.id)
        assert await age() == 0.0
