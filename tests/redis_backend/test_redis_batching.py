"""Batches on Redis: ``enqueue_many`` is one round trip however large the batch, and delayed
jobs that fall due are moved into their stream exactly once however many movers race."""

from __future__ import annotations

import hashlib
import time
from typing import Any

import anyio
import pytest
import redis.asyncio as aioredis
import services
from asyncq_redis import mover, scripts
from asyncq_redis.records import QueueKeys
from harness import Runs, Settled, statuses

import asyncq
from asyncq import JobStatus, current_job

from .redis_support import RoundTrips, redis_client, redis_url

pytestmark = pytest.mark.anyio


async def test_enqueue_many_is_one_round_trip(prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    app = asyncq.App(redis_url(prefix))

    @app.task
    async def work(n: int) -> None:
        pass

    enqueue_sha = hashlib.sha1(scripts.ENQUEUE.encode()).hexdigest()
    async with app:
        trips = RoundTrips(redis_client(app), monkeypatch)
        jobs = await work.enqueue_many([(n,) for n in range(10_000)])
        # One pipeline: ENQUEUE script calls that carry all 10,000 jobs (how many jobs each
        # call takes is the backend's business) and, because this backend had not seen the
        # queue yet, one SADD to the set of queue names ahead of them. One round trip.
        (pipeline,) = trips.pipelines
        assert pipeline[0] == ("SADD", f"{prefix}:queues", "default")
        assert all(command[:2] == ("EVALSHA", enqueue_sha) for command in pipeline[1:])
        assert _carried(pipeline) >= {job.id for job in jobs}
        assert trips.commands == []
        assert trips.sends == 1

        # A queue the backend has seen costs no SADD.
        trips.pipelines.clear()
        trips.commands.clear()
        trips.sends = 0
        more = await work.enqueue_many([(n,) for n in range(100)])
        sent = [command for p in trips.pipelines for command in p] + trips.commands
        assert all(command[:2] == ("EVALSHA", enqueue_sha) for command in sent)
        assert _carried(sent) >= {job.id for job in more}
        assert trips.sends == 1
        monkeypatch.undo()

        stats = (await app.queue_stats())["default"]
        assert (stats.pending, stats.scheduled, stats.running) == (10_100, 0, 0)
        assert len({job.id for job in [*jobs, *more]}) == 10_100
        assert await statuses(app, jobs[::1000]) == {JobStatus.QUEUED: 10}


def _carried(commands: list[tuple[Any, ...]]) -> set[str]:
    """Every string argument of ``commands``: the job ids among them."""
    return {arg for command in commands for arg in command if isinstance(arg, str)}


async def test_due_delayed_jobs_are_moved_exactly_once_by_racing_movers(
    prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The delay leaves room to enqueue them all and check they wait before any falls due,
    # even on a machine slowed by other work (0.3 s was once too short after tests/amqp_backend).
    count, delay = 2_000, 1.5
    url = redis_url(prefix)
    # Two workers (each runs the backend's mover in its task group), a third backend's
    # mover on its own, and four loops running the PROMOTE script directly.
    first, second, third = asyncq.App(url), asyncq.App(url), asyncq.App(url)
    runs = Runs()
    for app in (first, second):

        @app.task(name="later")
        async def later(n: int) -> None:
            runs.record(current_job().id)

    keys = QueueKeys(prefix, "default")
    moved_directly = 0

    async def promote_directly(raw: aioredis.Redis, due: float) -> None:
        nonlocal moved_directly
        # A timer, not a synchronisation: from shortly before the jobs fall due, run the
        # script as fast as it answers, to race the movers when they do.
        await anyio.sleep(max(due - time.time() - 0.1, 0.0))
        while True:
            moved, next_due = await raw.eval(
                mover.PROMOTE,
                3,
                keys.scheduled,
                keys.stream,
                keys.deferred,
                keys.base,
                repr(time.time()),
                25,
            )
            moved_directly += moved
            if not moved and not next_due:  # nothing scheduled any more
                return

    settled = Settled(monkeypatch, first.backend, second.backend)
    async with first, second, third, aioredis.Redis.from_url(services.REDIS_URL) as raw:
        task = first.tasks["later"]
        # Every mover is running before the jobs are enqueued, so all of them wait for the
        # same moment.
        async with first.worker(concurrency=50), second.worker(concurrency=50):
            async with anyio.create_task_group() as tg:
                tg.start_soon(third.backend.maintain, ["default"])
                due = time.time() + delay  # no job is due before this
                jobs = await task.options(delay=delay).enqueue_many([(n,) for n in range(count)])
                assert await statuses(first, jobs[::100]) == {JobStatus.SCHEDULED: 20}
                async with anyio.create_task_group() as direct:
                    for _ in range(4):
                        direct.start_soon(promote_directly, raw, due)
                await settled.all_succeeded([job.id for job in jobs], timeout=30)
                tg.cancel_scope.cancel()
        # Every XADD ever made to the stream (entries are deleted once acknowledged).
        added = (await raw.xinfo_stream(keys.stream))["entries-added"]
        scheduled = await raw.zcard(keys.scheduled)
        found = await statuses(first, jobs)
    print(f"{count} delayed jobs: {moved_directly} moved by the direct PROMOTE loops")
    assert added == count
    assert scheduled == 0
    assert runs.total == count
    assert set(runs.by_job) == {job.id for job in jobs}  # each ran, and only once
    assert found == {JobStatus.SUCCEEDED: count}
