"""The dead-letter queue: list, replay (a fresh retry budget) and purge, by task and by id."""

from __future__ import annotations

import anyio
import pytest

import asyncq
from asyncq import JobStatus, current_job
from asyncq.backend import Outcome
from asyncq.testing import Broker, Recorded, SettleLog

pytestmark = pytest.mark.anyio


async def test_list_replay_and_purge_dead_letters(
    app: asyncq.App, settled: SettleLog, recorded: Recorded
) -> None:
    healthy = False
    attempts: dict[int, list[int]] = {}

    @app.task(retries=1)
    async def pay(n: int) -> int:
        attempts.setdefault(n, []).append(current_job().attempt)
        if not healthy:
            raise ConnectionError("payment provider is down")
        return n

    @app.task
    async def mail(n: int) -> None:
        raise asyncq.Reject("bad address")

    async with app, app.worker(concurrency=1):
        pays = [await pay.enqueue(n) for n in (1, 2, 3)]
        mails = [await mail.enqueue(n) for n in (1, 2)]
        for paid in pays:
            assert await settled.wait(paid.id, 2) == [Outcome.RETRY, Outcome.DEAD]
            await recorded.failed(paid)
        for mailed in mails:
            assert await settled.wait(mailed.id) == [Outcome.DEAD]
            await recorded.failed(mailed)

        every = await app.dead_letters()
        assert {d.id for d in every} == {j.id for j in pays + mails}
        assert {d.id for d in await app.dead_letters(task=pay.name)} == {j.id for j in pays}
        assert {d.id for d in await app.dead_letters(task=mail.name)} == {j.id for j in mails}
        assert len(await app.dead_letters(limit=2)) == 2
        assert (await app.queue_stats([app.default_queue]))[app.default_queue].dead == 5

        # Replay one job by id: it runs again from attempt 1 and leaves the DLQ.
        healthy = True
        assert await app.replay_dead(ids=[pays[0].id]) == 1
        assert (await settled.wait(pays[0].id, 3))[-1] is Outcome.SUCCEEDED
        await recorded.result(pays[0], 1)
        assert attempts[1] == [1, 2, 1]
        remaining = {d.id for d in await app.dead_letters()}
        assert remaining == {j.id for j in pays[1:] + mails}

        # Replay by task: only that task's dead letters.
        assert await app.replay_dead(task=pay.name) == 2
        for paid, n in zip(pays[1:], (2, 3), strict=True):
            assert (await settled.wait(paid.id, 3))[-1] is Outcome.SUCCEEDED
            await recorded.result(paid, n)
        assert attempts[2][-1] == attempts[3][-1] == 1
        assert {d.id for d in await app.dead_letters()} == {j.id for j in mails}

        # Purge by id, then everything.
        assert await app.purge_dead(ids=[mails[0].id]) == 1
        assert [d.id for d in await app.dead_letters()] == [mails[1].id]
        assert await app.purge_dead(task=pay.name) == 0
        assert await app.purge_dead() == 1
        assert await app.dead_letters() == []
        assert (await app.queue_stats([app.default_queue]))[app.default_queue].dead == 0
        assert await app.replay_dead() == 0


async def test_purge_by_task_leaves_other_tasks_alone(
    app: asyncq.App, settled: SettleLog, recorded: Recorded
) -> None:
    @app.task
    async def first() -> None:
        raise asyncq.Reject("first")

    @app.task
    async def second() -> None:
        raise asyncq.Reject("second")

    async with app, app.worker(concurrency=1):
        jobs = [await first.enqueue(), await second.enqueue(), await first.enqueue()]
        for job in jobs:
            assert await settled.wait(job.id) == [Outcome.DEAD]
            await recorded.failed(job)
        assert await app.purge_dead(task=first.name) == 2
        (left,) = await app.dead_letters()
        assert left.id == jobs[1].id
        assert left.task == second.name
        assert await app.purge_dead(task=second.name, ids=[jobs[0].id]) == 0
        assert await app.purge_dead(task=second.name, ids=[jobs[1].id]) == 1
        assert await app.dead_letters() == []


async def test_replayed_job_that_fails_again_is_dead_again(
    app: asyncq.App, settled: SettleLog, recorded: Recorded
) -> None:
    @app.task
    async def refuse() -> None:
        raise asyncq.Reject("still no")

    async with app, app.worker(concurrency=1):
        job = await refuse.enqueue()
        assert await settled.wait(job.id) == [Outcome.DEAD]
        await recorded.failed(job)
        assert await app.replay_dead() == 1
        assert await settled.wait(job.id, 2) == [Outcome.DEAD, Outcome.DEAD]
        await recorded.failed(job, match="still no")
        await recorded.status(job, JobStatus.DEAD)
        assert [d.id for d in await app.dead_letters()] == [job.id]


async def test_a_dead_letter_is_found_by_its_job_id(app: asyncq.App, settled: SettleLog) -> None:
    attempts: list[str] = []

    @app.task
    async def refuse(order: str) -> None:
        attempts.append(order)
        raise asyncq.Reject(f"no, time {len(attempts)}")

    async with app:
        job = await refuse.enqueue("o-1")
        others = await refuse.enqueue_many([(f"o-{n}",) for n in range(2, 6)])
        async with app.worker(concurrency=1):
            for handle in (job, *others):
                await settled.wait(handle.id)
        queue = app.default_queue
        first = await app.backend.dead_letter(queue, job.id)
        assert first is not None and (first.id, first.queue) == (job.id, queue)
        assert (first.error.type, first.error.message) == ("Reject", "no, time 1")
        last = await app.backend.dead_letter(queue, others[-1].id)
        assert last is not None and last.error.message == "no, time 5"
        # Replayed, and dead again: the letter found is the new one.
        assert await app.replay_dead(ids=[job.id]) == 1
        async with app.worker(concurrency=1):
            await settled.wait(job.id, 2)
        again = await app.backend.dead_letter(queue, job.id)
        assert again is not None and again.error.message == "no, time 6"
        assert await app.backend.dead_letter(queue, "0" * 32) is None
        assert await app.backend.dead_letter("no-such-queue", job.id) is None


@pytest.mark.needs_store
async def test_replay_leaves_a_dead_letter_whose_key_a_live_job_holds(app: asyncq.App) -> None:
    @app.task(retries=0)
    async def refund(order: str) -> str:
        raise asyncq.Reject("card expired")

    async with app:
        first = await refund.options(key="refund-7").enqueue("7")
        async with app.worker(concurrency=1):
            with pytest.raises(asyncq.JobFailed):
                await first.result(timeout=5)
        # The key is free once the job is dead; a new job takes it and waits, unworked.
        second = await refund.options(key="refund-7").enqueue("7")
        assert second.id != first.id

        assert await app.replay_dead() == 0
        assert [d.id for d in await app.dead_letters()] == [first.id]
        assert await first.status() is JobStatus.DEAD
        assert await second.status() is JobStatus.QUEUED


@pytest.mark.needs_store
async def test_replayed_job_has_a_fresh_record(broker: Broker) -> None:
    app = broker.app(result_ttl=0.5)
    ready = anyio.Event()

    @app.task(retries=0)
    async def export(n: int) -> int:
        if not ready.is_set():
            raise RuntimeError("not yet")
        return n

    async with app:
        job = await export.enqueue(5)
        async with app.worker(concurrency=1):
            with pytest.raises(asyncq.JobFailed):
                await job.result(timeout=5)
        assert await app.replay_dead() == 1
        # The dead job's record would have expired by now; the replayed job's must not.
        await anyio.sleep(0.8)
        info = await job.info()
        assert (info.status, info.attempt, info.error) == (JobStatus.QUEUED, 1, None)
        ready.set()
        async with app.worker(concurrency=1):
            assert await job.result(timeout=5) == 5
