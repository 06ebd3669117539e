"""Per-minute counts of finished attempts (``Backend.minute_counts``): successes and
failures (retried or dead-lettered) per queue, counted as a worker settles them; what did
not end (a snooze) is not counted, and nothing shows for a queue where nothing ended."""

from __future__ import annotations

import time

import pytest

import asyncq
from asyncq.testing import SettleLog
from asyncq.throughput import MINUTE

pytestmark = [pytest.mark.anyio, pytest.mark.needs_minute_counts]


async def test_successes_and_failures_are_counted_per_queue_and_minute(
    app: asyncq.App, settled: SettleLog
) -> None:
    @app.task(retries=1)  # the suite's App retries within milliseconds
    async def work(n: int) -> int:
        if n < 0:
            raise ValueError("negative")
        return n

    @app.task(queue="quiet")
    async def idle() -> None:
        pass

    async with app:
        before = time.time()
        jobs = await work.enqueue_many([(n,) for n in (1, 2, 3, -1)])
        async with app.worker(concurrency=4):
            for job in jobs[:3]:
                await settled.wait(job.id, timeout=10)
            await settled.wait(jobs[3].id, count=2, timeout=10)  # a retry, then dead
        counts = await app.backend.minute_counts([app.default_queue, "quiet"], 5)
        after = time.time()
    assert {c.queue for c in counts} == {app.default_queue}
    assert sum(c.succeeded for c in counts) == 3
    assert sum(c.failed for c in counts) == 2  # the failed attempt and the dead one
    for c in counts:
        assert c.minute % MINUTE == 0
        assert before - MINUTE < c.minute <= after
