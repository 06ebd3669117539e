"""Idempotency keys: while a job with a key is queued, running or succeeded, enqueueing the
same key returns that job; once it is dead or cancelled the key is free again."""

from __future__ import annotations

import anyio
import pytest

import asyncq
from asyncq import JobStatus
from asyncq.testing import Broker

pytestmark = [pytest.mark.anyio, pytest.mark.needs_store]


async def test_same_key_returns_the_same_job_while_queued_running_and_succeeded(
    app: asyncq.App,
) -> None:
    started, release = anyio.Event(), anyio.Event()
    calls: list[str] = []

    @app.task
    async def charge(order: str) -> str:
        calls.append(order)
        started.set()
        await release.wait()
        return order

    async with app:
        first = await charge.options(key="order-42").enqueue("first")
        assert (await charge.options(key="order-42").enqueue("queued")).id == first.id
        other = await charge.options(key="order-43").enqueue("other")
        assert other.id != first.id
        async with app.worker(concurrency=1):
            with anyio.fail_after(5):
                await started.wait()
            assert await first.status() is JobStatus.RUNNING
            assert (await charge.options(key="order-42").enqueue("running")).id == first.id
            release.set()
            assert await first.result(timeout=5) == "first"
            assert (await charge.options(key="order-42").enqueue("succeeded")).id == first.id
            assert await other.result(timeout=5) == "other"
    assert calls == ["first", "other"]


async def test_key_of_a_dead_job_is_free_again(app: asyncq.App) -> None:
    calls: list[int] = []

    @app.task
    async def once(n: int) -> int:
        calls.append(n)
        if n == 1:
            raise asyncq.Reject("not this one")
        return n

    async with app, app.worker(concurrency=1):
        dead = await once.options(key="k").enqueue(1)
        with pytest.raises(asyncq.JobFailed):
            await dead.result(timeout=5)
        again = await once.options(key="k").enqueue(2)
        assert again.id != dead.id
        assert await again.result(timeout=5) == 2
    assert calls == [1, 2]


async def test_key_of_a_cancelled_job_is_free_again(app: asyncq.App) -> None:
    @app.task
    async def once(n: int) -> int:
        return n

    async with app:
        cancelled = await once.options(key="k").enqueue(1)
        assert await cancelled.cancel()
        again = await once.options(key="k").enqueue(2)
        assert again.id != cancelled.id
        async with app.worker(concurrency=1):
            assert await again.result(timeout=5) == 2
        assert await cancelled.status() is JobStatus.CANCELLED


async def test_one_key_cannot_name_several_jobs(app: asyncq.App) -> None:
    @app.task
    async def once(n: int) -> int:
        return n

    async with app:
        with pytest.raises(ValueError, match="key"):
            await once.options(key="k").enqueue_many([(1,), (2,)])
        stats = await app.queue_stats([app.default_queue])
        assert stats[app.default_queue].pending == 0


async def test_key_of_a_succeeded_job_is_free_once_its_result_expired(broker: Broker) -> None:
    result_ttl = 0.3
    app = broker.app(result_ttl=result_ttl)

    @app.task
    async def once(n: int) -> int:
        return n

    async with app, app.worker(concurrency=1):
        first = await once.options(key="k").enqueue(1)
        assert await first.result(timeout=5) == 1
        assert (await once.options(key="k").enqueue(2)).id == first.id
        await anyio.sleep(result_ttl + 0.1)  # let the result TTL run out
        again = await once.options(key="k").enqueue(3)
        assert again.id != first.id
        assert await again.result(timeout=5) == 3
        with pytest.raises(asyncq.JobNotFound):
            await first.status()
