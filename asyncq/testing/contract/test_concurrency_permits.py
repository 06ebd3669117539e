"""The JobStore's concurrency permits: at most ``limit`` holders per key; a holder asking
again keeps its permit; a permit whose lease ran out (its worker was lost) is free again; a
released one is free at once; a refusal says how long to wait, spread over the waiters."""

from __future__ import annotations

import anyio
import pytest

import asyncq
from asyncq.records import ConcurrencyRequest, Permit

pytestmark = [pytest.mark.anyio, pytest.mark.needs_store]


async def test_permits_up_to_the_limit_and_a_holder_keeps_its_own(
    app: asyncq.App, unique: str
) -> None:
    store = app.backend.store
    key = f"{unique}-a"
    async with app:
        asks = [ConcurrencyRequest(key, 2, holder, lease=30) for holder in ("j1", "j2", "j3")]
        waits = await store.take_concurrency_permits(asks)
        assert waits[:2] == [0.0, 0.0]
        assert waits[2] > 0
        # A redelivered copy of j1 takes over its own permit, not a third one.
        assert await store.take_concurrency_permits([asks[0]]) == [0.0]
        # Two more refused callers wait longer than the first: they are behind it.
        later = await store.take_concurrency_permits(
            [ConcurrencyRequest(key, 2, h, lease=30) for h in ("j4", "j5", "j6")]
        )
        assert all(w > 0 for w in later)
        assert later[-1] >= waits[2]
        # Another key has its own holders.
        assert await store.take_concurrency_permits(
            [ConcurrencyRequest(f"{unique}-b", 2, "j3", lease=30)]
        ) == [0.0]

        await store.release_concurrency_permits([Permit(key, "j1")], [0.05])
        assert await store.take_concurrency_permits([asks[2]]) == [0.0]
        assert (await store.take_concurrency_permits([asks[0]]))[0] > 0


async def test_a_permit_whose_lease_ran_out_is_free_again(app: asyncq.App, unique: str) -> None:
    store = app.backend.store
    async with app:
        (taken,) = await store.take_concurrency_permits(
            [ConcurrencyRequest(unique, 1, "lost", lease=0.3)]
        )
        assert taken == 0.0
        fresh = ConcurrencyRequest(unique, 1, "fresh", lease=30)
        assert (await store.take_concurrency_permits([fresh]))[0] > 0
        # A renewal keeps a permit held beyond its first lease.
        await store.renew_concurrency_permits([Permit(unique, "lost")], 0.6)
        await anyio.sleep(0.4)  # not a wait for something: the lease being tested
        assert (await store.take_concurrency_permits([fresh]))[0] > 0
        await anyio.sleep(0.3)  # past the renewed lease: the holder was lost
        assert await store.take_concurrency_permits([fresh]) == [0.0]
