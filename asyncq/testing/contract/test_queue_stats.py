"""``queue_stats``: per queue, how many jobs are pending, scheduled, running and dead."""

from __future__ import annotations

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
