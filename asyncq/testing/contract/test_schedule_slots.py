"""Periodic slots in the JobStore: among any number of callers, in any number of Apps on one
broker, exactly one claims a slot; a claimed slot stays claimed for its ``ttl``, whatever
became of its job; and the schedule's last slot is the latest one claimed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import anyio
import pytest

import asyncq
from asyncq.testing import Broker

pytestmark = [pytest.mark.anyio, pytest.mark.needs_store]

SLOT = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)


async def test_one_caller_of_many_in_several_apps_claims_a_slot(broker: Broker) -> None:
    apps = [broker.app() for _ in range(3)]
    won: list[int] = []

    async def claim(n: int, app: asyncq.App) -> None:
        if await app.backend.store.claim_slot("nightly", SLOT, ttl=60):
            won.append(n)

    async with apps[0], apps[1], apps[2]:
        async with anyio.create_task_group() as tg:
            for n in range(30):
                tg.start_soon(claim, n, apps[n % 3])
        assert len(won) == 1, won
        # Claimed before: no one wins it again, from any App.
        for app in apps:
            assert not await app.backend.store.claim_slot("nightly", SLOT, ttl=60)


async def test_slots_and_schedules_are_claimed_apart(app: asyncq.App) -> None:
    store = app.backend.store
    async with app:
        assert await store.last_slot("nightly") is None
        assert await store.claim_slot("nightly", SLOT, ttl=60)
        assert await store.claim_slot("nightly", SLOT + timedelta(minutes=1), ttl=60)
        assert await store.claim_slot("hourly", SLOT, ttl=60)  # another schedule's slot
        assert not await store.claim_slot("hourly", SLOT, ttl=60)


async def test_the_last_slot_is_the_latest_claimed_whatever_the_order(app: asyncq.App) -> None:
    store = app.backend.store
    later = SLOT + timedelta(hours=1)
    async with app:
        assert await store.claim_slot("report", later, ttl=60)
        assert await store.claim_slot("report", SLOT, ttl=60)  # a catch-up of an older slot
        assert await store.last_slot("report") == later
        assert await store.last_slot("other") is None
