"""``list_jobs`` on RabbitMQ, with a record store and without: queued jobs browsed from the
work queue without taking them, scheduled ones soonest first (from the records, or from
the queue's own wait queues), running ones from the records, dead ones from the
dead-letter queue; each paged by its cursor."""

from __future__ import annotations

import time

import anyio
import pytest

import asyncq
from asyncq import JobStatus

from .amqp_support import amqp_url, rabbitmq_only_url

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["records", "rabbitmq-only"])
def app(request: pytest.FixtureRequest, prefix: str) -> asyncq.App:
    url = amqp_url(prefix) if request.param == "records" else rabbitmq_only_url(prefix)
    return asyncq.App(url, shutdown_timeout=2.0)


async def test_queued_scheduled_running_and_dead_jobs_are_listed_and_paged(
    app: asyncq.App,
) -> None:
    started, release = anyio.Event(), anyio.Event()

    @app.task(name="block")
    async def block() -> None:
        started.set()
        await release.wait()

    @app.task(name="plain")
    async def plain(n: int) -> None:
        pass

    @app.task(name="refuse")
    async def refuse() -> None:
        raise asyncq.Reject("no")

    q = app.default_queue
    backend = app.backend
    async with app:
        # Two jobs die first, then one runs and blocks the worker's only slot.
        dead = [await refuse.enqueue(), await refuse.enqueue()]
        running = await block.enqueue()
        async with app.worker(concurrency=1, prefetch=0):
            with anyio.fail_after(10):
                await started.wait()
            queued = [await plain.enqueue(n) for n in range(3)]
            now = time.time()
            later = await plain.options(delay=120).enqueue(9)
            sooner = await plain.options(delay=60).enqueue(8)

            first = await backend.list_jobs(q, JobStatus.QUEUED, limit=2)
            rest = await backend.list_jobs(q, JobStatus.QUEUED, after=first[-1].cursor)
            assert [j.id for j in first + rest] == [j.id for j in queued]
            assert {(j.status, j.task, j.attempt) for j in first + rest} == {
                (JobStatus.QUEUED, "plain", 1)
            }
            # Browsing took nothing: the jobs are still pending.
            assert (await app.queue_stats([q]))[q].pending == 3

            scheduled = await backend.list_jobs(q, JobStatus.SCHEDULED)
            assert [j.id for j in scheduled] == [sooner.id, later.id]
            eta = scheduled[0].eta
            assert eta is not None and now + 59 < eta < now + 61
            paged = await backend.list_jobs(q, JobStatus.SCHEDULED, after=scheduled[0].cursor)
            assert [j.id for j in paged] == [later.id]

            if backend.store.available:
                (listed,) = await backend.list_jobs(q, JobStatus.RUNNING)
                assert (listed.id, listed.status, listed.task) == (
                    running.id,
                    JobStatus.RUNNING,
                    "block",
                )
            else:
                with pytest.raises(asyncq.ConfigurationError, match="add records="):
                    await backend.list_jobs(q, JobStatus.RUNNING)
            release.set()

        (one,) = await backend.list_jobs(q, JobStatus.DEAD, limit=1)
        (two,) = await backend.list_jobs(q, JobStatus.DEAD, after=one.cursor)
        assert [one.id, two.id] == [j.id for j in dead]
        assert (one.status, one.task) == (JobStatus.DEAD, "refuse")
        with pytest.raises(ValueError, match="cannot be listed"):
            await backend.list_jobs(q, JobStatus.SUCCEEDED)
