"""Operating on a whole queue: purging its waiting jobs (they end CANCELLED, running ones
finish, dead letters stay) and removing a queue nothing uses any more."""

from __future__ import annotations

import anyio
import pytest

import asyncq
from asyncq import JobStatus
from asyncq.backend import Outcome
from asyncq.testing import Recorded, SettleLog

pytestmark = pytest.mark.anyio


async def test_purge_drops_every_waiting_job_and_leaves_running_and_dead_ones(
    app: asyncq.App, settled: SettleLog, recorded: Recorded
) -> None:
    holding, release = anyio.Event(), anyio.Event()
    ran: list[str] = []

    @app.task(retries=3)
    async def work(name: str) -> str:
        ran.append(name)
        if name == "hold":
            holding.set()
            await release.wait()
        if name == "retry":
            raise asyncq.Retry(delay=60)
        return name

    @app.task
    async def doomed() -> None:
        raise asyncq.Reject("no")

    async with app:
        async with app.worker(concurrency=1):
            dead = await doomed.enqueue()
            assert await settled.wait(dead.id, timeout=10) == [Outcome.DEAD]
            await recorded.failed(dead)
            retrying = await work.enqueue("retry")
            assert await settled.wait(retrying.id) == [Outcome.RETRY]
            await recorded.status(retrying, JobStatus.FAILED)
            running = await work.enqueue("hold")
            with anyio.fail_after(10):
                await holding.wait()
            await work.enqueue_many([(f"ready-{i}",) for i in range(3)])
            for i in range(2):
                await work.options(delay=60).enqueue(f"later-{i}")

            progress: list[int] = []
            assert await app.purge_queue(app.default_queue, on_progress=progress.append) == 6
            assert progress == [6]
            stats = (await app.queue_stats([app.default_queue]))[app.default_queue]
            assert (stats.pending, stats.scheduled, stats.running, stats.dead) == (0, 0, 1, 1)
            release.set()
            assert await settled.wait(running.id, timeout=10) == [Outcome.SUCCEEDED]
            await recorded.result(running, "hold")
            # A job after the purge runs; none of the purged ones did before it.
            after = await work.enqueue("after")
            assert await settled.wait(after.id, timeout=10) == [Outcome.SUCCEEDED]
        assert await app.purge_queue(app.default_queue) == 0
        assert [d.id for d in await app.dead_letters()] == [dead.id]
    assert ran == ["retry", "hold", "after"]


@pytest.mark.needs_store
async def test_purged_jobs_end_cancelled_and_free_their_keys(
    app: asyncq.App, settled: SettleLog
) -> None:
    ran: list[str] = []

    @app.task(retries=3)
    async def work(name: str) -> str:
        ran.append(name)
        if name == "retry":
            raise asyncq.Retry(delay=60)
        return name

    async with app:
        async with app.worker(concurrency=1):
            retrying = await work.enqueue("retry")
            await settled.wait(retrying.id)
        waiting = [await work.options(key=f"k{i}").enqueue(f"ready-{i}") for i in range(3)]
        delayed = [await work.options(delay=60).enqueue(f"later-{i}") for i in range(2)]
        assert await app.purge_queue(app.default_queue) == 6
        for job in (*waiting, *delayed, retrying):
            assert await job.status() is JobStatus.CANCELLED
            with pytest.raises(asyncq.JobCancelled):
                await job.result(timeout=5)
        # A purged job's idempotency key is free again.
        again = await work.options(key="k0").enqueue("ready-again")
        assert again != waiting[0]
        async with app.worker(concurrency=1):
            assert await again.result(timeout=10) == "ready-again"
    assert ran == ["retry", "ready-again"]


async def test_purging_a_deep_queue_goes_in_batches_with_progress(app: asyncq.App) -> None:
    @app.task
    async def noop(n: int) -> None:
        pass

    async with app:
        await noop.enqueue_many([(n,) for n in range(2500)])
        progress: list[int] = []
        assert await app.purge_queue(app.default_queue, on_progress=progress.append) == 2500
        stats = (await app.queue_stats([app.default_queue]))[app.default_queue]
    assert progress == [1000, 2000, 2500]
    assert stats.pending == 0


@pytest.mark.needs_store
async def test_a_queue_is_removed_only_when_nothing_uses_it(app: asyncq.App) -> None:
    @app.task(queue="old")
    async def retired() -> None:
        raise asyncq.Reject("no")

    async with app:
        async with app.worker(concurrency=1, queues=["old"]):
            job = await retired.enqueue()
            with pytest.raises(asyncq.JobFailed):
                await job.result(timeout=10)
            with pytest.raises(ValueError, match=r"queue 'old' is not empty \(1 dead\)"):
                await app.remove_queue("old")
            assert await app.purge_dead("old") == 1
            with pytest.raises(ValueError, match=r"served by 1 live worker"):
                await app.remove_queue("old")
        assert "old" in await app.known_queues()
        await app.remove_queue("old")
        assert "old" not in {s.queue for s in await app.backend.queue_stats(None)}
