"""Delays: ``delay=`` and ``at=`` are honoured to within 10% or 100 ms, whichever is larger,
and a delayed job never runs before its time."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

import asyncq
from asyncq import JobStatus
from asyncq.backend import Outcome
from asyncq.testing import Recorded, SettleLog

pytestmark = pytest.mark.anyio


def tolerance(delay: float) -> float:
    return max(0.1 * delay, 0.1)


async def warm(settled: SettleLog, task: asyncq.Task[..., None], *args: object) -> None:
    """Run one undelayed job of ``task`` first, so the queue and its delay machinery exist
    before a delay is timed: a broker may declare them on first use (RabbitMQ without
    records declares a queue's waits then, several hundred ms on a slow machine), and a
    delay that runs out meanwhile is due at once, rightly."""
    job = await task.enqueue(*args)
    assert await settled.wait(job.id, timeout=10) == [Outcome.SUCCEEDED]


@pytest.mark.parametrize("delay", [0.3, 0.6])
async def test_delay_is_honoured(
    app: asyncq.App, settled: SettleLog, recorded: Recorded, delay: float
) -> None:
    ran_at: list[float] = []

    @app.task
    async def later() -> None:
        ran_at.append(time.time())

    async with app, app.worker(concurrency=1):
        await warm(settled, later)
        enqueued_at = time.time()
        job = await later.options(delay=delay).enqueue()
        await recorded.status(job, JobStatus.SCHEDULED)
        assert (await app.queue_stats([app.default_queue]))[app.default_queue].scheduled == 1
        assert await settled.wait(job.id, timeout=delay + 5) == [Outcome.SUCCEEDED]
        await recorded.result(job, None)
    waited = ran_at[-1] - enqueued_at  # [0] is the warm-up
    assert delay <= waited <= delay + tolerance(delay)


async def test_at_is_honoured(app: asyncq.App, settled: SettleLog, recorded: Recorded) -> None:
    delay = 0.4
    ran_at: list[float] = []

    @app.task
    async def later() -> None:
        ran_at.append(time.time())

    async with app, app.worker(concurrency=1):
        await warm(settled, later)
        at = datetime.now(UTC) + timedelta(seconds=delay)
        job = await later.options(at=at).enqueue()
        await recorded.status(job, JobStatus.SCHEDULED)
        assert await settled.wait(job.id, timeout=delay + 5) == [Outcome.SUCCEEDED]
        await recorded.result(job, None)
    late = ran_at[-1] - at.timestamp()  # [0] is the warm-up
    assert 0 <= late <= tolerance(delay)


async def test_at_in_the_past_runs_at_once(
    app: asyncq.App, settled: SettleLog, recorded: Recorded
) -> None:
    @app.task
    async def now() -> str:
        return "ran"

    async with app, app.worker(concurrency=1):
        job = await now.options(at=datetime.now(UTC) - timedelta(hours=1)).enqueue()
        assert await settled.wait(job.id) == [Outcome.SUCCEEDED]
        await recorded.result(job, "ran")


async def test_delayed_job_waits_behind_a_ready_one(app: asyncq.App, settled: SettleLog) -> None:
    order: list[str] = []

    @app.task
    async def record(name: str) -> None:
        order.append(name)

    async with app, app.worker(concurrency=1):
        await warm(settled, record, "warm-up")
        late = await record.options(delay=0.3).enqueue("late")
        soon = await record.enqueue("soon")
        assert await settled.wait(soon.id) == [Outcome.SUCCEEDED]
        assert await settled.wait(late.id) == [Outcome.SUCCEEDED]
    assert order == ["warm-up", "soon", "late"]


def test_at_needs_a_timezone_aware_datetime() -> None:
    app = asyncq.App("memory://")

    @app.task
    async def later() -> None:
        pass

    with pytest.raises(ValueError, match="timezone"):
        later.options(at=datetime.now())
    with pytest.raises(ValueError):
        later.options(delay=1, at=datetime.now(UTC))
    with pytest.raises(ValueError):
        later.options(delay=-1)
