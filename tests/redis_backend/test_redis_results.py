"""Waiting for results on Redis: many waiters share one pub/sub connection, so they cannot
drain the connection pool that the worker settling their jobs needs too."""

from __future__ import annotations

import anyio
import pytest

import asyncq

from .redis_support import redis_url

pytestmark = pytest.mark.anyio


async def test_hundreds_of_waiters_with_a_small_pool(prefix: str) -> None:
    app = asyncq.App(redis_url(prefix, max_connections=8))

    @app.task
    async def echo(n: int) -> int:
        await anyio.sleep(0.05)
        return n

    results: dict[int, int] = {}

    async def collect(n: int, job: asyncq.Job[int]) -> None:
        results[n] = await job.result(timeout=20)

    async with app:
        jobs = await echo.enqueue_many([(n,) for n in range(300)])
        with anyio.fail_after(30):
            async with app.worker(concurrency=50), anyio.create_task_group() as waiters:
                for n, job in enumerate(jobs):
                    waiters.start_soon(collect, n, job)
    assert results == {n: n for n in range(300)}
