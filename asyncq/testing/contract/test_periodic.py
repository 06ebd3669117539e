"""Periodic schedules: every worker fires them and each slot is enqueued once among all
of them; a slot fired once is never fired again, whatever became of its job."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import anyio
import pytest

import asyncq
from asyncq.periodic import fire, slot_key
from asyncq.testing import Broker

pytestmark = [pytest.mark.anyio, pytest.mark.needs_store]


async def test_three_workers_enqueue_each_slot_of_every_second_once(broker: Broker) -> None:
    apps = [broker.app() for _ in range(3)]
    runs: list[tuple[str, float]] = []
    for app in apps:

        @app.periodic(every=1, name="tick")
        async def tick() -> None:
            runs.append((asyncq.current_job().id, time.time()))

    async with apps[0], apps[1], apps[2]:
        async with apps[0].worker(), apps[1].worker(), apps[2].worker():
            began = time.time()
            with anyio.fail_after(10):
                while len(runs) < 4:  # noqa: ASYNC110 - the slots come with the clock
                    await anyio.sleep(0.05)
            ended = time.time()
    seconds = [int(at) for _, at in runs]
    assert len({job for job, _ in runs}) == len(runs), runs  # one job per run ...
    assert len(set(seconds)) == len(seconds), runs  # ... and one run per slot
    assert len(runs) <= int(ended) - int(began) + 1, (runs, began, ended)


async def test_a_fired_slot_is_not_fired_again_after_its_job_is_cancelled(
    app: asyncq.App,
) -> None:
    @app.task
    async def report(day: str) -> str:
        return day

    schedule = app.schedule(report, "0 3 * * *", args=("daily",), name="nightly")
    slot = datetime(2026, 12, 2, 3, 0, tzinfo=UTC)
    async with app:
        assert await fire(app, schedule, slot)
        assert not await fire(app, schedule, slot)  # another worker, a moment later
        assert await app.backend.store.last_slot("nightly") == slot
        # The key the slot's job was enqueued under names that job.
        job = await report.options(key=slot_key(schedule, slot)).enqueue("daily")
        assert await job.cancel()
        assert not await fire(app, schedule, slot)  # its job is gone: the slot stays fired
        later = datetime(2026, 12, 3, 3, 0, tzinfo=UTC)
        assert await fire(app, schedule, later)
