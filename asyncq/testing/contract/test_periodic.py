"""Periodic schedules: every worker fires them and each slot is enqueued once among all
of them; a slot fired once is never fired again, whatever became of its job. A slot's job
knows its slot; ``overlap=False`` skips slots while the last one's job is unfinished; a
paused schedule fires nothing; a trigger runs a schedule now, outside its slots."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import anyio
import pytest

import asyncq
from asyncq.backend import Outcome
from asyncq.periodic import fire, slot_key, trigger
from asyncq.testing import Broker, SettleLog

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


async def test_a_slots_job_knows_its_slot_and_the_claim_names_its_job(
    app: asyncq.App, settled: SettleLog
) -> None:
    slots: list[datetime | None] = []

    @app.task
    async def report(day: str) -> None:
        slots.append(asyncq.current_job().scheduled_for)

    schedule = app.schedule(report, "0 3 * * *", args=("daily",), name="nightly")
    slot = datetime(2026, 12, 2, 3, 0, tzinfo=UTC)
    async with app:
        assert await fire(app, schedule, slot)
        state = await app.backend.store.schedule_state("nightly")
        assert state.last_slot == slot and state.last_job is not None
        job = app.get_job(state.last_job)
        async with app.worker(concurrency=1):
            assert await settled.wait(job.id) == [Outcome.SUCCEEDED]
    assert slots == [slot]


async def test_without_overlap_a_slot_is_skipped_while_the_last_slots_job_is_unfinished(
    app: asyncq.App,
) -> None:
    @app.task
    async def sync() -> None: ...

    schedule = app.schedule(sync, every=60, name="sync", overlap=False)
    first = datetime(2026, 12, 2, 3, 0, tzinfo=UTC)
    second, third = first + timedelta(minutes=1), first + timedelta(minutes=2)
    async with app:  # no worker: the first slot's job stays queued
        assert await fire(app, schedule, first)
        assert not await fire(app, schedule, second)  # skipped, not claimed
        state = await app.backend.store.schedule_state("sync")
        assert state.last_slot == first
        assert state.last_job is not None
        assert await app.get_job(state.last_job).cancel()  # finished now
        assert await fire(app, schedule, third)
        assert (await app.backend.store.schedule_state("sync")).last_slot == third


async def test_a_paused_schedule_fires_nothing_until_it_is_resumed(app: asyncq.App) -> None:
    @app.task
    async def ping() -> None: ...

    schedule = app.schedule(ping, every=60, name="ping")
    slot = datetime(2026, 12, 2, 3, 0, tzinfo=UTC)
    store = app.backend.store
    async with app:
        await store.pause_schedule("ping", True)
        assert (await store.schedule_state("ping")).paused
        assert not await fire(app, schedule, slot)
        await store.pause_schedule("ping", False)
        state = await store.schedule_state("ping")
        assert not state.paused and state.last_slot is None  # the paused slot passed unclaimed
        assert await fire(app, schedule, slot + timedelta(minutes=1))


async def test_triggering_a_schedule_enqueues_a_run_now_and_claims_no_slot(
    app: asyncq.App, settled: SettleLog
) -> None:
    ran: list[datetime | None] = []

    @app.periodic(every=3600, name="hourly-sync")
    async def hourly() -> None:
        ran.append(asyncq.current_job().scheduled_for)

    async with app:
        before = datetime.now(UTC)
        job = await trigger(app, "hourly-sync")
        async with app.worker(concurrency=1):
            assert await settled.wait(job.id) == [Outcome.SUCCEEDED]
        assert (await app.backend.store.schedule_state("hourly-sync")).last_slot is None
    (slot,) = ran
    assert slot is not None and before <= slot <= datetime.now(UTC)
