"""Priorities: among a queue's ready jobs a worker starts the highest priority (0..9) first,
FIFO within a priority; a retry or a delay keeps its job's priority. Jobs already handed to
a worker are not preempted, so each test runs one worker with ``concurrency=1, prefetch=0``,
where the order is exact. A priority outside 0..9 is a ``ValueError`` and sends nothing."""

from __future__ import annotations

import anyio
import pytest

import asyncq
from asyncq import current_job
from asyncq.backend import Outcome
from asyncq.testing import SettleLog

pytestmark = pytest.mark.anyio


class Runs:
    """The order jobs ran in, and a wait until so many have."""

    def __init__(self) -> None:
        self.order: list[str] = []
        self._changed = anyio.Event()

    def ran(self, name: str) -> None:
        self.order.append(name)
        self._changed.set()
        self._changed = anyio.Event()

    async def wait(self, count: int, *, timeout: float = 20.0) -> list[str]:
        with anyio.fail_after(timeout):
            while len(self.order) < count:
                await self._changed.wait()
        return self.order


async def run_one_at_a_time(app: asyncq.App, runs: Runs, count: int) -> list[str]:
    """Start a worker that takes one job at a time and wait for ``count`` jobs to run."""
    async with app.worker(concurrency=1, prefetch=0):
        return await runs.wait(count)


@pytest.mark.needs_priorities
async def test_priority_nine_jobs_enqueued_last_run_first(app: asyncq.App) -> None:
    runs = Runs()

    @app.task
    async def job(name: str) -> None:
        runs.ran(name)

    async with app:
        # The worker is not running yet: every job is ready when it starts.
        await job.enqueue_many([(f"p0-{i}",) for i in range(100)])
        await job.options(priority=9).enqueue_many([(f"p9-{i}",) for i in range(10)])
        order = await run_one_at_a_time(app, runs, 110)
    assert order == [f"p9-{i}" for i in range(10)] + [f"p0-{i}" for i in range(100)]


@pytest.mark.needs_priorities
async def test_levels_run_highest_first_and_fifo_within_one(app: asyncq.App) -> None:
    runs = Runs()

    @app.task
    async def job(name: str) -> None:
        runs.ran(name)

    sent = [(priority, i) for i in range(4) for priority in (0, 3, 9, 1, 7)]
    async with app:
        for priority, i in sent:  # interleaved: arrival order alone would be wrong
            await job.options(priority=priority).enqueue(f"p{priority}-{i}")
        order = await run_one_at_a_time(app, runs, len(sent))
    assert order == [f"p{p}-{i}" for p, i in sorted(sent, key=lambda s: (-s[0], s[1]))]


@pytest.mark.needs_priorities
async def test_options_priority_overrides_the_task_s(app: asyncq.App) -> None:
    runs = Runs()

    @app.task(priority=4)
    async def job(name: str) -> None:
        runs.ran(name)

    async with app:
        await job.options(priority=0).enqueue("lowered")
        await job.enqueue("task's own")
        await job.options(priority=8).enqueue("raised")
        await job.options(key=None).enqueue("task's own, other options")
        order = await run_one_at_a_time(app, runs, 4)
    assert order == ["raised", "task's own", "task's own, other options", "lowered"]


@pytest.mark.needs_priorities
async def test_a_retried_job_keeps_its_priority(app: asyncq.App, settled: SettleLog) -> None:
    runs = Runs()

    @app.task(retries=1)
    async def job(name: str) -> None:
        runs.ran(f"{name}#{current_job().attempt}")
        if name == "flaky" and current_job().attempt == 1:
            raise asyncq.Retry(delay=0)  # back in its queue at once, behind its own level

    async with app:
        flaky = await job.options(priority=5).enqueue("flaky")
        await job.enqueue_many([(f"low-{i}",) for i in range(3)])
        await job.options(priority=5).enqueue("peer")
        order = await run_one_at_a_time(app, runs, 6)
    assert order == ["flaky#1", "peer#1", "flaky#2", "low-0#1", "low-1#1", "low-2#1"]
    assert settled.outcomes[flaky.id] == [Outcome.RETRY, Outcome.SUCCEEDED]


@pytest.mark.needs_priorities
async def test_a_snoozed_job_keeps_its_priority(app: asyncq.App, settled: SettleLog) -> None:
    runs = Runs()

    @app.task
    async def job(name: str) -> None:
        runs.ran(f"{name}#{current_job().attempt}")
        if name == "waiting" and runs.order.count("waiting#1") == 1:
            raise asyncq.Snooze(0)  # back in its queue at once, behind its own level

    async with app:
        waiting = await job.options(priority=4).enqueue("waiting")
        await job.enqueue_many([(f"low-{i}",) for i in range(2)])
        await job.options(priority=4).enqueue("peer")
        order = await run_one_at_a_time(app, runs, 5)
    assert order == ["waiting#1", "peer#1", "waiting#1", "low-0#1", "low-1#1"]
    assert settled.outcomes[waiting.id] == [Outcome.SNOOZE, Outcome.SUCCEEDED]


@pytest.mark.needs_priorities
async def test_delayed_jobs_and_delayed_retries_keep_their_priority(
    app: asyncq.App, settled: SettleLog
) -> None:
    runs = Runs()
    gate_open, gate_running = anyio.Event(), anyio.Event()

    @app.task(retries=1)
    async def job(name: str) -> None:
        runs.ran(f"{name}#{current_job().attempt}")
        if name == "gate":
            gate_running.set()
            await gate_open.wait()
        elif name == "flaky" and current_job().attempt == 1:
            raise asyncq.Retry(delay=0.2)  # through the broker's delayed jobs

    async def pending() -> int:
        return (await app.queue_stats([app.default_queue]))[app.default_queue].pending

    async def ready(count: int) -> None:
        """Wait until the queue holds ``count`` jobs ready to run."""
        with anyio.fail_after(10):
            # The delays run out in the broker, which sends no event: look until they have.
            while await pending() < count:  # noqa: ASYNC110
                await anyio.sleep(0.05)

    async with app:
        flaky = await job.options(priority=6).enqueue("flaky")
        await job.options(priority=1).enqueue("gate")
        async with app.worker(concurrency=1, prefetch=0):
            with anyio.fail_after(10):
                await gate_running.wait()  # flaky ran and waits for its retry
            await job.enqueue_many([(f"low-{i}",) for i in range(3)])
            await job.options(priority=9, delay=0.2).enqueue("delayed")
            # Both delays run out while the gate holds the only slot: once they are ready,
            # the gate lets the worker choose among five ready jobs.
            await ready(5)
            gate_open.set()
            order = await runs.wait(7)
    assert order == ["flaky#1", "gate#1", "delayed#1", "flaky#2", "low-0#1", "low-1#1", "low-2#1"]
    assert settled.outcomes[flaky.id] == [Outcome.RETRY, Outcome.SUCCEEDED]


@pytest.mark.parametrize("bad", [10, -1, 1.5, "9", True, None])
async def test_a_priority_outside_0_to_9_is_a_value_error_and_sends_nothing(
    app: asyncq.App, bad: object
) -> None:
    @app.task
    async def job() -> None: ...

    with pytest.raises(ValueError, match=f"priority must be an integer from 0 to 9.*{bad!r}"):
        app.task(name="bad", priority=bad)(job.fn)  # type: ignore[call-overload]
    assert "bad" not in app.tasks
    async with app:
        if bad is not None:  # options(priority=None) means the task's own
            with pytest.raises(ValueError, match="priority must be an integer from 0 to 9"):
                await job.options(priority=bad).enqueue()  # type: ignore[arg-type]
            with pytest.raises(ValueError, match="priority must be an integer from 0 to 9"):
                await job.options(priority=bad).enqueue_many([(), ()])  # type: ignore[arg-type]
        stats = (await app.queue_stats([app.default_queue]))[app.default_queue]
    assert (stats.pending, stats.scheduled) == (0, 0)
