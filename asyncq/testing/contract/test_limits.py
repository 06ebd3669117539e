"""Rate and concurrency limits of a task, across every worker of the broker: a job over a
limit is not started; it goes back to wait (settled DEFER), spends no attempt, stays QUEUED
and counted as pending, and does not hold up other tasks of its queue."""

from __future__ import annotations

import time

import anyio
import pytest

import asyncq
from asyncq import ConcurrencyLimit, JobStatus, RateLimit, current_job
from asyncq.backend import Outcome
from asyncq.testing import Recorded, SettleLog

pytestmark = [pytest.mark.anyio, pytest.mark.needs_store]

CLOCKS = 0.05
"""Start times are read by the handlers, permits on the store's clock: allow this much."""


async def settled_past_deferrals(settled: SettleLog, job_id: str) -> list[Outcome]:
    """The job's outcomes once one is not a deferral (it ran, one way or another)."""
    outcomes = await settled.wait(job_id, timeout=15)
    while outcomes[-1] is Outcome.DEFER:
        outcomes = await settled.wait(job_id, len(outcomes) + 1, timeout=15)
    return outcomes


def most_in_any_window(starts: list[float], per: float) -> int:
    """The most starts in any window of ``per`` seconds (less the clocks' allowance)."""
    starts = sorted(starts)
    return max(
        sum(1 for t in starts[i:] if t < start + per - CLOCKS) for i, start in enumerate(starts)
    )


async def test_no_window_of_a_rate_limit_holds_more_starts_than_its_limit(
    app: asyncq.App, settled: SettleLog, recorded: Recorded
) -> None:
    starts: list[float] = []
    done = anyio.Event()

    started: list[str] = []

    @app.task(rate_limit=RateLimit(3, per=0.5), retries=0)
    async def call_api(n: int) -> int:
        starts.append(time.time())
        started.append(current_job().id)
        if len(starts) == 9:
            done.set()
        return n

    # Two workers with room for every job at once: only the limit holds them back.
    async with app, app.worker(concurrency=9), app.worker(concurrency=9):
        began = time.time()
        jobs = await call_api.enqueue_many([(n,) for n in range(9)])
        with anyio.fail_after(10):
            await done.wait()
        took = max(starts) - began
        assert sorted(started) == sorted(job.id for job in jobs)  # each once
        for n, job in enumerate(jobs):
            await recorded.result(job, n, timeout=15)
            outcomes = await settled_past_deferrals(settled, job.id)
            assert outcomes[-1] is Outcome.SUCCEEDED
            assert set(outcomes[:-1]) <= {Outcome.DEFER}, outcomes
            info = await recorded.info(job)
            assert info is not None and (info.attempt, info.snoozes) == (1, 0)
    assert most_in_any_window(starts, 0.5) <= 3, sorted(t - began for t in starts)
    # Three windows' worth: the last three start a second after the first three.
    assert 1.0 - CLOCKS <= took <= 3.0, took
    assert any(Outcome.DEFER in o for o in settled.outcomes.values())


async def test_a_job_held_back_by_a_limit_is_queued_and_pending_and_holds_no_one_up(
    app: asyncq.App, settled: SettleLog, unique: str
) -> None:
    unlimited_done = anyio.Event()
    unlimited_runs: list[int] = []

    @app.task(rate_limit="1/h", queue=unique)
    async def monthly_report() -> None:
        pass

    @app.task(queue=unique)
    async def ping(n: int) -> None:
        unlimited_runs.append(n)
        if len(unlimited_runs) == 5:
            unlimited_done.set()

    async with app, app.worker(concurrency=2, queues=[unique]):
        first = await monthly_report.enqueue()
        await settled.wait(first.id)
        held = await monthly_report.enqueue()
        # Refused its permit: back in the queue to wait, not started, not failed.
        assert await settled.wait(held.id) == [Outcome.DEFER]
        pings = await ping.enqueue_many([(n,) for n in range(5)])
        with anyio.fail_after(5):
            await unlimited_done.wait()
        for job in pings:
            assert await settled.wait(job.id) == [Outcome.SUCCEEDED]
        assert (await held.info()).status is JobStatus.QUEUED
        stats = (await app.queue_stats([unique]))[unique]
        assert (stats.pending, stats.scheduled, stats.running) == (1, 0, 0)
        # A held-back job can be cancelled like any waiting one.
        assert await held.cancel()
        stats = (await app.queue_stats([unique]))[unique]
        assert (stats.pending, stats.scheduled) == (0, 0)
    assert settled.outcomes[held.id] == [Outcome.DEFER]


async def test_a_keyed_rate_limit_holds_each_value_back_on_its_own(
    app: asyncq.App, settled: SettleLog
) -> None:
    starts: dict[str, list[float]] = {}

    @app.task(rate_limit=RateLimit(2, per=10, key="tenant"))
    async def sync(tenant: str, n: int) -> None:
        starts.setdefault(tenant, []).append(time.time())

    async with app, app.worker(concurrency=10):
        jobs = await sync.enqueue_many([(t, n) for t in ("a", "b", "c") for n in range(3)])
        outcomes = [await settled.wait(job.id) for job in jobs]
    # Per tenant: the first two ran at once, the third waits for the next ten seconds.
    for tenant in ("a", "b", "c"):
        assert len(starts[tenant]) == 2, starts
    assert sorted(o[0].value for o in outcomes) == ["defer"] * 3 + ["succeeded"] * 6


async def test_a_concurrency_limit_bounds_the_jobs_running_across_workers(
    app: asyncq.App, recorded: Recorded
) -> None:
    running = most = finished = 0
    done = anyio.Event()

    @app.task(concurrency_limit=2, retries=0)
    async def export(n: int) -> int:
        nonlocal running, most, finished
        running += 1
        most = max(most, running)
        await anyio.sleep(0.05)  # the work: long enough for the others to try to start
        running -= 1
        finished += 1
        if finished == 8:
            done.set()
        return n

    async with app, app.worker(concurrency=4), app.worker(concurrency=4):
        jobs = await export.enqueue_many([(n,) for n in range(8)])
        with anyio.fail_after(10):
            await done.wait()
        for n, job in enumerate(jobs):
            await recorded.result(job, n)
    assert most == 2


async def test_a_keyed_concurrency_limit_runs_one_key_at_a_time_and_keys_together(
    app: asyncq.App,
) -> None:
    running: dict[str, int] = {"x": 0, "y": 0}
    overlap_within_key = overlap_across_keys = False
    finished: list[str] = []
    done = anyio.Event()

    @app.task(concurrency_limit=ConcurrencyLimit(1, key="account"))
    async def post_ledger(account: str, n: int) -> None:
        nonlocal overlap_within_key, overlap_across_keys
        running[account] += 1
        overlap_within_key |= running[account] > 1
        other = "y" if account == "x" else "x"
        overlap_across_keys |= running[other] > 0
        await anyio.sleep(0.05)
        running[account] -= 1
        finished.append(account)
        if len(finished) == 6:
            done.set()

    async with app, app.worker(concurrency=6):
        await post_ledger.enqueue_many([(a, n) for n in range(3) for a in ("x", "y")])
        with anyio.fail_after(10):
            await done.wait()
    assert not overlap_within_key
    assert overlap_across_keys


async def test_a_job_that_ends_gives_its_concurrency_permit_back_at_once(
    app: asyncq.App, settled: SettleLog
) -> None:
    # One permit, jobs one after the other: each finds the last one's permit given back
    # (not waiting for its lease to run out, which is many seconds).
    @app.task(concurrency_limit=1)
    async def step(n: int) -> int:
        return n

    async with app, app.worker(concurrency=1):
        began = time.monotonic()
        for n in range(5):
            job = await step.enqueue(n)
            assert await settled.wait(job.id) == [Outcome.SUCCEEDED]
        assert time.monotonic() - began < 5


async def test_a_limit_keyed_by_a_missing_parameter_is_refused_at_decoration(
    app: asyncq.App,
) -> None:
    with pytest.raises(ValueError, match="no parameter of that name"):

        @app.task(rate_limit=RateLimit(5, key="tenant"))
        async def sync(customer: str) -> None:
            pass

    with pytest.raises(ValueError, match="no parameter of that name"):

        @app.task(concurrency_limit=ConcurrencyLimit(1, key="account"))
        async def post(customer: str) -> None:
            pass


async def test_jobs_of_one_key_with_a_limit_of_1_start_in_enqueue_order(
    app: asyncq.App, unique: str
) -> None:
    starts: dict[str, list[int]] = {"x": [], "y": []}
    finished: list[int] = []
    done = anyio.Event()
    overlapped = False
    running: set[str] = set()

    @app.task(queue=unique, concurrency_limit=ConcurrencyLimit(1, key="account"))
    async def post(account: str, n: int) -> None:
        nonlocal overlapped
        starts[account].append(n)
        overlapped |= bool(running)
        running.add(account)
        await anyio.sleep(0.02)
        running.discard(account)
        finished.append(n)
        if len(finished) == 16:
            done.set()

    async with app:
        # Enqueued before any worker runs, with priorities that would reorder them: the
        # line of each account is its enqueue order, whatever the priority. A broker
        # without priorities refuses them (quorum queues): there, arrival order alone.
        reorder = app.backend.supports_priorities
        for n in range(8):
            for account in ("x", "y"):
                await post.options(priority=(7 * n) % 10 if reorder else 0).enqueue(account, n)
        async with app.worker(concurrency=8, queues=[unique]):
            async with app.worker(concurrency=8, queues=[unique]):
                with anyio.fail_after(20):
                    await done.wait()
    assert starts == {"x": list(range(8)), "y": list(range(8))}
    assert overlapped  # the two accounts ran side by side


async def test_a_line_does_not_wait_for_an_enqueue_that_stored_nothing(
    app: asyncq.App, recorded: Recorded
) -> None:
    @app.task(concurrency_limit=ConcurrencyLimit(1, key="account"))
    async def post(account: str, n: int) -> int:
        return n

    async with app:
        first = await post.options(key="order-1").enqueue("x", 1)
        again = await post.options(key="order-1").enqueue("x", 1)  # a duplicate: voided
        assert again.id == first.id
        after = await post.enqueue("x", 2)
        async with app.worker(concurrency=2):
            began = time.monotonic()
            await recorded.result(first, 1)
            await recorded.result(after, 2, timeout=10)
            # Far sooner than the line's wait for a ticket that never asks.
            assert time.monotonic() - began < 5
