"""Operating on a whole queue: purging its waiting jobs (they end CANCELLED, running ones
finish, dead letters stay) and removing a queue nothing uses any more."""

from __future__ import annotations

import anyio
import pytest

import asyncq
from asyncq import JobStatus
from asyncq.testing import SettleLog

pytestmark = pytest.mark.anyio


@pytest.mark.needs_store
async def test_purge_cancels_every_waiting_job_and_leaves_running_ones(
    app: asyncq.App, settled: SettleLog
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
            with pytest.raises(asyncq.JobFailed):
                await dead.result(timeout=10)
            retrying = await work.enqueue("retry")
            await settled.wait(retrying.id)
            assert await retrying.status() is JobStatus.FAILED
            running = await work.enqueue("hold")
            with anyio.fail_after(10):
                await holding.wait()
            waiting = [await work.options(key=f"k{i}").enqueue(f"ready-{i}") for i in range(3)]
            delayed = [await work.options(delay=60).enqueue(f"later-{i}") for i in range(2)]

            progress: list[int] = []
            assert await app.purge_queue(app.default_queue, on_progress=progress.append) == 6
            assert progress == [6]
            stats = (await app.queue_stats([app.default_queue]))[app.default_queue]
            assert (stats.pending, stats.scheduled, stats.running, stats.dead) == (0, 0, 1, 1)
            for job in (*waiting, *delayed, retrying):
                assert await job.status() is JobStatus.CANCELLED
                with pytest.raises(asyncq.JobCancelled):
                    await job.result(timeout=5)
            # A purged job's idempotency key is free again.
            again = await work.options(key="k0").enqueue("ready-again")
            assert again != waiting[0]
            release.set()
            assert await running.result(timeout=10) == "hold"
            assert await again.result(timeout=10) == "ready-again"
        assert await app.purge_queue(app.default_queue) == 0
    assert ran == ["retry", "hold", "ready-again"]


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
