"""Enqueues in flight at once (a web server's requests): each caller gets its own job's id,
every job runs once with its own arguments, however the backend groups them on the way, and
a caller cancelled mid-flight leaves nothing behind that stops the next ones."""

from __future__ import annotations

import anyio
import pytest

import asyncq
from asyncq import current_job

pytestmark = pytest.mark.anyio

CALLERS = 100
JOBS = 300


async def test_concurrent_enqueues_each_get_their_own_job(app: asyncq.App) -> None:
    ran: dict[int, list[str]] = {}
    all_ran = anyio.Event()

    @app.task
    async def record(n: int) -> None:
        ran.setdefault(n, []).append(current_job().id)
        if len(ran) == JOBS:
            all_ran.set()

    ids: dict[int, str] = {}
    numbers = iter(range(JOBS))

    async def caller() -> None:
        for n in numbers:
            ids[n] = (await record.enqueue(n)).id

    async with app:
        async with anyio.create_task_group() as tg:
            for _ in range(CALLERS):
                tg.start_soon(caller)
        assert len(set(ids.values())) == JOBS
        async with app.worker(concurrency=50):
            with anyio.fail_after(30):
                await all_ran.wait()
    # Every job ran once, under the id its own caller was given.
    assert ran == {n: [ids[n]] for n in range(JOBS)}


@pytest.mark.needs_store
async def test_concurrent_enqueues_of_one_key_make_one_job(app: asyncq.App) -> None:
    calls: list[int] = []

    @app.task
    async def charge(n: int) -> int:
        calls.append(n)
        return n

    jobs: list[asyncq.Job[int]] = []

    async def caller(n: int) -> None:
        jobs.append(await charge.options(key="order-7").enqueue(n))

    async with app:
        async with anyio.create_task_group() as tg:
            for n in range(20):
                tg.start_soon(caller, n)
        assert len({job.id for job in jobs}) == 1
        async with app.worker(concurrency=5):
            first = await jobs[0].result(timeout=10)
        # Drained: nothing else of the twenty is left to run.
        assert (await app.queue_stats())[app.default_queue].pending == 0
    assert calls == [first]


async def test_a_caller_cancelled_in_flight_does_not_stop_the_next(app: asyncq.App) -> None:
    ran: list[int] = []
    later_ran = anyio.Event()

    @app.task
    async def work(n: int) -> None:
        ran.append(n)
        if set(range(20)) <= set(ran):
            later_ran.set()

    async def cancelled_caller(n: int) -> None:
        with anyio.CancelScope() as scope:
            scope.cancel()  # cancelled at its first wait, with its job on the way or not
            await work.enqueue(n)

    async with app:
        async with anyio.create_task_group() as tg:
            for n in range(1000, 1020):
                tg.start_soon(cancelled_caller, n)
            for n in range(10):  # enqueued beside the cancelled ones
                tg.start_soon(work.enqueue, n)
        for n in range(10, 20):
            await work.enqueue(n)
        async with app.worker(concurrency=10):
            with anyio.fail_after(10):
                await later_ran.wait()
    assert sorted(n for n in ran if n < 20) == list(range(20))
