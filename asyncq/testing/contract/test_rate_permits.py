"""The JobStore's rate-limit permits (``take_rate_permits``): a sliding log per key, on the
store's clock, so that no window of ``per`` seconds, wherever it falls, holds more than
``limit`` permits; a refusal says how long until the oldest permit leaves the window."""

from __future__ import annotations

import os
import time

import anyio
import pytest

import asyncq
from asyncq.records import RateRequest

pytestmark = [pytest.mark.anyio, pytest.mark.needs_store]


def requests(key: str, count: int, limit: int, per: float) -> list[RateRequest]:
    return [RateRequest(key, limit, per, os.urandom(8).hex()) for _ in range(count)]


async def test_permits_up_to_the_limit_then_the_wait_for_the_oldest(
    app: asyncq.App, unique: str
) -> None:
    store = app.backend.store
    async with app:
        first = time.monotonic()
        waits = await store.take_rate_permits(requests(f"{unique}-a", 5, limit=3, per=1.0))
        assert waits[:3] == [0.0, 0.0, 0.0]
        # Refused: the two over the limit wait until the first permit is a second old.
        assert all(0 < w <= 1.0 for w in waits[3:]), waits
        # Another key has its own log.
        assert await store.take_rate_permits(requests(f"{unique}-b", 1, limit=3, per=1.0)) == [0.0]

        await anyio.sleep(waits[3])  # not a wait for something: the window being tested
        again = await store.take_rate_permits(requests(f"{unique}-a", 4, limit=3, per=1.0))
        # The first permits (taken within a moment) left the window: up to three again,
        # never four, and no sooner than a second after the first.
        assert again[0] == 0.0
        assert again[3] > 0
        assert time.monotonic() - first >= 1.0 - 0.01


async def test_no_window_holds_more_than_the_limit(app: asyncq.App, unique: str) -> None:
    # Take permits as fast as they come for a while: each time the taken ones of any one
    # second, counted from each permit's moment, stay within the limit.
    store = app.backend.store
    taken: list[float] = []
    async with app:
        deadline = time.monotonic() + 1.6
        (asking,) = requests(unique, 1, limit=4, per=0.5)
        while time.monotonic() < deadline:
            (wait,) = await store.take_rate_permits([asking])
            if wait == 0.0:
                taken.append(time.monotonic())
                (asking,) = requests(unique, 1, limit=4, per=0.5)  # the next job's start
            else:
                # What a limited job does: come back (with its own token) for the permit.
                await anyio.sleep(wait)
    # In 1.6 s at 4 per 0.5 s: 12 to 16 permits.
    assert 12 <= len(taken) <= 16, len(taken)
    for i, start in enumerate(taken):
        # The client's clock is not the store's: allow its round trip either side.
        within = [t for t in taken[i:] if t < start + 0.5 - 0.05]
        assert len(within) <= 4, (start, within)


async def test_refused_callers_are_served_in_line_and_newcomers_queue_behind(
    app: asyncq.App, unique: str
) -> None:
    store = app.backend.store
    async with app:
        first = requests(unique, 2, limit=2, per=0.5)
        assert await store.take_rate_permits(first) == [0.0, 0.0]
        waiters = requests(unique, 4, limit=2, per=0.5)
        waits = await store.take_rate_permits(waiters)
        # Two per window: the first two waiters get the next window, the other two the one
        # after it.
        assert all(0 < w <= 0.5 for w in waits[:2]), waits
        assert all(0.5 < w <= 1.0 for w in waits[2:]), waits
        await anyio.sleep(waits[1])  # not a wait for something: the window being tested
        # Permits are free now, but promised to the waiters: a newcomer goes behind them,
        # and the waiters coming back get theirs.
        (late,) = await store.take_rate_permits(requests(unique, 1, limit=2, per=0.5))
        assert late > waits[3] - waits[1] - 0.05, (late, waits)
        assert await store.take_rate_permits(waiters[:2]) == [0.0, 0.0]
