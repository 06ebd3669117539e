"""What a backend gives without reading a job record: jobs run and leave their queue, fail and
are retried, wait out their delay, go to the dead-letter queue and come back from it, and a
stopped worker's job runs again. Everything here is seen through the handlers, the
settlements, queue stats and the dead-letter queue, so it holds on a backend that keeps no
records (RabbitMQ without ``records=``) as on every other."""

from __future__ import annotations

import time

import anyio
import pytest

import asyncq
from asyncq import current_job
from asyncq.backend import Outcome
from asyncq.testing import SettleLog

pytestmark = pytest.mark.anyio

EMPTY = asyncq.QueueStats("default")


async def stats(app: asyncq.App) -> asyncq.QueueStats:
    return (await app.queue_stats([app.default_queue]))[app.default_queue]


async def test_jobs_run_with_their_arguments_and_leave_the_queue(
    app: asyncq.App, settled: SettleLog
) -> None:
    seen: list[tuple[int, int]] = []

    @app.task
    async def add(a: int, b: int = 0) -> int:
        seen.append((a, b))
        return a + b

    async with app:
        jobs = [await add.enqueue(1, b=2), *await add.enqueue_many([(3, 4), {"a": 5}])]
        assert (await stats(app)).pending == 3
        async with app.worker(concurrency=2):
            for job in jobs:
                assert await settled.wait(job.id) == [Outcome.SUCCEEDED]
        assert await stats(app) == EMPTY
    assert sorted(seen) == [(1, 2), (3, 4), (5, 0)]


async def test_failed_attempts_are_retried_until_they_succeed_or_die(
    app: asyncq.App, settled: SettleLog
) -> None:
    attempts: dict[str, list[int]] = {"flaky": [], "broken": []}

    @app.task(retries=2)
    async def work(name: str) -> None:
        attempts[name].append(current_job().attempt)
        if name == "broken" or len(attempts[name]) < 3:
            raise ConnectionError(f"{name} is down")

    async with app, app.worker(concurrency=2):
        flaky, broken = await work.enqueue("flaky"), await work.enqueue("broken")
        retried_twice = [Outcome.RETRY, Outcome.RETRY]
        assert await settled.wait(flaky.id, 3) == [*retried_twice, Outcome.SUCCEEDED]
        assert await settled.wait(broken.id, 3) == [*retried_twice, Outcome.DEAD]
        (dead,) = await app.dead_letters()
        assert (await stats(app)).dead == 1
    assert attempts == {"flaky": [1, 2, 3], "broken": [1, 2, 3]}
    assert (dead.id, dead.task) == (broken.id, work.name)
    assert (dead.error.type, dead.error.message) == ("ConnectionError", "broken is down")


async def test_a_delayed_job_waits_for_its_time(app: asyncq.App, settled: SettleLog) -> None:
    delay = 0.4
    ran_at: list[float] = []

    @app.task
    async def later() -> None:
        ran_at.append(time.time())

    async with app, app.worker(concurrency=1):
        enqueued_at = time.time()
        job = await later.options(delay=delay).enqueue()
        assert (await stats(app)).scheduled == 1
        await settled.wait(job.id, timeout=delay + 5)
    assert delay <= ran_at[0] - enqueued_at <= delay + max(0.1 * delay, 0.1)


async def test_dead_letters_are_replayed_and_purged(app: asyncq.App, settled: SettleLog) -> None:
    healthy = False
    attempts: list[int] = []

    @app.task(retries=0)
    async def pay(order: str) -> None:
        attempts.append(current_job().attempt)
        if not healthy:
            raise asyncq.Reject("provider is down")

    async with app, app.worker(concurrency=1):
        replayed, purged = await pay.enqueue("a"), await pay.enqueue("b")
        for job in (replayed, purged):
            assert await settled.wait(job.id) == [Outcome.DEAD]
        assert {d.id for d in await app.dead_letters()} == {replayed.id, purged.id}
        healthy = True
        assert await app.replay_dead(ids=[replayed.id]) == 1
        assert await settled.wait(replayed.id, 2) == [Outcome.DEAD, Outcome.SUCCEEDED]
        assert await app.purge_dead(ids=[purged.id]) == 1
        assert await app.dead_letters() == []
        assert await stats(app) == EMPTY
    assert attempts == [1, 1, 1]  # a replay starts again from attempt 1


async def test_the_job_of_a_stopped_worker_runs_again_with_its_attempt(app: asyncq.App) -> None:
    started, done = anyio.Event(), anyio.Event()
    runs: list[int] = []

    @app.task(retries=0)
    async def work() -> None:
        runs.append(current_job().attempt)
        if len(runs) == 1:
            started.set()
            await anyio.sleep_forever()
        done.set()

    async with app:
        await work.enqueue()
        first = asyncq.Worker(app, concurrency=1, shutdown_timeout=0)
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                await tg.start(first.run)
                await started.wait()
                first.stop()
        assert (await stats(app)).pending == 1  # given back, not acknowledged
        async with app.worker(concurrency=1):
            with anyio.fail_after(5):
                await done.wait()
    # With retries=0, a spent attempt would have made it dead instead.
    assert runs == [1, 1]
