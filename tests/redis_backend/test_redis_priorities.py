"""Priorities on Redis: the queue's stream keeps priority 0 and each priority above 0 gets a
stream of its own (``<stream>:<priority>``, named in the set ``<base>:levels``), all under
the queue's hash tag. Jobs written before priorities existed run after priorities appear;
a worker blocked on the streams it knows wakes for a new priority; a lost worker's job is
taken over from any priority's stream; stats, listing, purge and removal cover them all."""

from __future__ import annotations

import time
from typing import Any

import anyio
import asyncq_redis.blocking
import pytest
import redis.asyncio as aioredis
import services
from redis.crc import key_slot

import asyncq
from asyncq import JobStatus, current_job

from .redis_support import redis_client, redis_url

pytestmark = pytest.mark.anyio


async def _keys(prefix: str) -> set[str]:
    async with aioredis.Redis.from_url(services.REDIS_URL, decode_responses=True) as raw:
        return {key async for key in raw.scan_iter(f"{prefix}:*", count=1000)}


async def test_jobs_from_before_priorities_still_run_once_priorities_appear(prefix: str) -> None:
    # An upgraded deployment: jobs are in the queue's stream, one of them delivered to a
    # worker of the old version that is gone; then jobs with priorities arrive.
    app = asyncq.App(redis_url(prefix, visibility_timeout=0.5))
    ran: list[str] = []
    all_ran = anyio.Event()

    @app.task
    async def job(name: str) -> None:
        ran.append(f"{name}{' (taken over)' if current_job().redelivered else ''}")
        if len(ran) == 5:
            all_ran.set()

    async with app:
        await job.enqueue_many([(f"old-{i}",) for i in range(3)])
        # Only the stream of before: no key for priorities yet.
        base = f"{prefix}:{{default}}"
        assert {k for k in await _keys(prefix) if ":job:" not in k} == {
            f"{prefix}:queues",
            f"{base}:stream",
        }
        # The old worker took old-0 and died (its group, as that version made it).
        client = redis_client(app)
        await client.xgroup_create(f"{base}:stream", "asyncq", id="0")
        taken: Any = await client.xreadgroup("asyncq", "old-worker", {f"{base}:stream": ">"}, 1)
        assert len(taken[0][1]) == 1
        await job.options(priority=9).enqueue("new-9")
        await job.options(priority=4).enqueue("new-4")
        async with app.worker(concurrency=1, prefetch=0):
            with anyio.fail_after(10):
                await all_ran.wait()
    # The lost job's lease runs out half a second in: by then the others may have run.
    assert sorted(ran) == ["new-4", "new-9", "old-0 (taken over)", "old-1", "old-2"]
    fresh = [name for name in ran if "taken over" not in name]
    assert fresh == ["new-9", "new-4", "old-1", "old-2"]


async def test_an_idle_worker_wakes_for_a_queue_s_first_job_of_a_priority(
    prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The worker's blocking read covers the streams its last fetch found: only the default
    # one here. Its block lasts the fetch timeout (60 s) and nothing is pending, so only
    # the news of the new stream can make the job start within seconds.
    app = asyncq.App(redis_url(prefix, visibility_timeout=120))
    started = anyio.Event()

    @app.task
    async def urgent() -> None:
        started.set()

    real_read_group = asyncq_redis.blocking.read_group
    blocking = anyio.Event()

    async def read_group(*args: Any, **kwargs: Any) -> Any:
        blocking.set()
        return await real_read_group(*args, **kwargs)

    monkeypatch.setattr(asyncq_redis.blocking, "read_group", read_group)
    async with app, app.worker(concurrency=1, fetch_timeout=60):
        with anyio.fail_after(10):
            await blocking.wait()
        enqueued_at = time.monotonic()
        job = await urgent.options(priority=7).enqueue()
        with anyio.fail_after(5):
            await started.wait()
        await job.result(timeout=5)
    assert time.monotonic() - enqueued_at < 5


async def test_a_lost_worker_s_job_of_a_priority_is_taken_over(prefix: str) -> None:
    app = asyncq.App(redis_url(prefix, visibility_timeout=0.3))
    runs: list[tuple[int, bool]] = []

    @app.task(priority=6)
    async def job() -> str:
        runs.append((current_job().attempt, current_job().redelivered))
        return "done"

    async with app:
        lost = await job.enqueue()
        stream = f"{prefix}:{{default}}:stream:6"
        taken: Any = await redis_client(app).xreadgroup("asyncq", "gone", {stream: ">"}, 1)
        assert taken[0][1][0][1][b"id"] == lost.id.encode()
        assert await lost.status() is JobStatus.RUNNING
        async with app.worker(concurrency=1):
            assert await lost.result(timeout=10) == "done"
    assert runs == [(1, True)]


async def test_stats_listing_purge_and_removal_cover_every_priority(prefix: str) -> None:
    app = asyncq.App(redis_url(prefix))
    holding, release = anyio.Event(), anyio.Event()

    @app.task(queue="mixed")
    async def job(name: str) -> None:
        if name == "held":
            holding.set()
            await release.wait()

    async with app:
        held = await job.options(priority=3).enqueue("held")
        async with app.worker(queues=["mixed"], concurrency=1, prefetch=0):
            with anyio.fail_after(10):
                await holding.wait()
            low = await job.enqueue_many([("low-a",), ("low-b",)])
            high = await job.options(priority=9).enqueue("high")
            mid = await job.options(priority=3).enqueue("mid")
            delayed = await job.options(priority=5, delay=60).enqueue("later")

            stats = (await app.queue_stats(["mixed"]))["mixed"]
            assert (stats.pending, stats.running, stats.scheduled) == (4, 1, 1)
            # Queued in the order a worker takes them, a page at a time across the streams.
            listed, after = [], None
            while page := await app.backend.list_jobs(
                "mixed", JobStatus.QUEUED, limit=1, after=after
            ):
                listed += [j.id for j in page]
                after = page[-1].cursor
            assert listed == [high.id, mid.id, *(j.id for j in low)]
            running = await app.backend.list_jobs("mixed", JobStatus.RUNNING)
            assert [j.id for j in running] == [held.id]
            assert await held.status() is JobStatus.RUNNING

            assert await mid.cancel()
            assert await app.purge_queue("mixed") == 4  # high, two low, the delayed one
            for gone in (high, mid, *low, delayed):
                assert await gone.status() is JobStatus.CANCELLED
            release.set()
            await held.result(timeout=5)
        stats = (await app.queue_stats(["mixed"]))["mixed"]
        assert (stats.pending, stats.running, stats.scheduled) == (0, 0, 0)

        base = f"{prefix}:{{mixed}}"
        queue_keys = {k for k in await _keys(prefix) if k.startswith(base) and ":job:" not in k}
        assert {f"{base}:stream:9", f"{base}:stream:5", f"{base}:levels"} <= queue_keys
        assert len({key_slot(k.encode()) for k in queue_keys}) == 1  # one cluster slot
        await app.remove_queue("mixed")
        left = {k for k in await _keys(prefix) if k.startswith(base)}
        assert not {k for k in left if ":job:" not in k and ":done:" not in k}, left
