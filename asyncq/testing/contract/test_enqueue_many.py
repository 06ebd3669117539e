"""``enqueue_many``: many jobs in one backend round trip; tuples are positional arguments,
mappings keyword arguments."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import anyio
import pytest

import asyncq
from asyncq.backend import Envelope, Outcome
from asyncq.testing import Recorded, SettleLog

pytestmark = pytest.mark.anyio


async def test_enqueue_many_is_one_round_trip_and_mixes_tuples_and_dicts(
    app: asyncq.App, monkeypatch: pytest.MonkeyPatch, settled: SettleLog, recorded: Recorded
) -> None:
    seen: list[tuple[int, int]] = []

    @app.task
    async def add(a: int, b: int = 0) -> int:
        seen.append((a, b))
        return a + b

    # Count the calls reaching the real backend.
    batches: list[int] = []
    real_enqueue = app.backend.enqueue

    async def enqueue(envelopes: Sequence[Envelope]) -> list[str]:
        batches.append(len(envelopes))
        return await real_enqueue(envelopes)

    monkeypatch.setattr(app.backend, "enqueue", enqueue)

    async with app:
        jobs = await add.enqueue_many([(1, 2), {"a": 3, "b": 4}, (5,), {"a": 6}])
        assert batches == [4]
        assert len({job.id for job in jobs}) == 4
        assert await add.enqueue_many([]) == []
        assert batches == [4]
        assert (await app.queue_stats([app.default_queue]))[app.default_queue].pending == 4
        async with app.worker(concurrency=4):
            for job, total in zip(jobs, [3, 7, 5, 6], strict=True):
                assert await settled.wait(job.id) == [Outcome.SUCCEEDED]
                await recorded.result(job, total)
        # Done and acknowledged: they have left the queue.
        stats = (await app.queue_stats([app.default_queue]))[app.default_queue]
    assert sorted(seen) == [(1, 2), (3, 4), (5, 0), (6, 0)]
    assert stats == asyncq.QueueStats(app.default_queue)


async def test_enqueue_many_with_options_and_a_bad_item(
    app: asyncq.App, settled: SettleLog, recorded: Recorded
) -> None:
    seen: list[str] = []

    @app.task
    async def echo(value: str) -> str:
        seen.append(value)
        return value

    async with app:
        jobs = await echo.options(queue="elsewhere").enqueue_many([("a",), ("b",)])
        stats = await app.queue_stats(["elsewhere", app.default_queue])
        assert stats["elsewhere"].pending == 2
        assert stats[app.default_queue].pending == 0
        with pytest.raises(TypeError, match="tuples"):
            await echo.enqueue_many(cast(Any, [("c",), ["d"]]))
        # Nothing of the failed batch was sent.
        stats = await app.queue_stats(["elsewhere", app.default_queue])
        assert stats["elsewhere"].pending == 2
        assert stats[app.default_queue].pending == 0
        async with app.worker(concurrency=2, queues=["elsewhere"]):
            for job, value in zip(jobs, ["a", "b"], strict=True):
                assert await settled.wait(job.id) == [Outcome.SUCCEEDED]
                await recorded.result(job, value)
    assert sorted(seen) == ["a", "b"]


@pytest.mark.needs_priorities
async def test_concurrent_enqueues_of_several_queues_and_priorities_each_get_their_job_s_id(
    app: asyncq.App, settled: SettleLog
) -> None:
    # Enqueues made at once may reach the broker as one batch (see asyncq.coalescing); a
    # broker that groups that batch by queue and priority must hand each caller its own
    # job's id back, in the caller's order.
    ran: dict[str, str] = {}

    @app.task
    async def job(name: str) -> None:
        ran[asyncq.current_job().id] = name

    calls = [(queue, priority) for queue in ("left", "right") for priority in (0, 3, 0, 7)]
    jobs: dict[str, asyncq.Job[None]] = {}

    async def send(i: int, queue: str, priority: int) -> None:
        name = f"{queue}-{priority}-{i}"
        jobs[name] = await job.options(queue=queue, priority=priority).enqueue(name)

    async with app:
        async with anyio.create_task_group() as tg:
            for i, (queue, priority) in enumerate(calls):
                tg.start_soon(send, i, queue, priority)
        assert len({j.id for j in jobs.values()}) == len(calls)
        async with app.worker(queues=["left", "right"], concurrency=4):
            for j in jobs.values():
                assert await settled.wait(j.id) == [Outcome.SUCCEEDED]
    assert ran == {j.id: name for name, j in jobs.items()}
