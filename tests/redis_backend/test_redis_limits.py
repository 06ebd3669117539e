"""Where limits keep their state in Redis: one hash tag per limit key (one Cluster slot,
whatever queues its jobs are in), and every key of a limit expires once the limit is
quiet, so millions of tenants leave nothing behind."""

from __future__ import annotations

import anyio
import pytest
import redis.asyncio as aioredis
import services
from redis.crc import key_slot

import asyncq
from asyncq.records import ConcurrencyRequest, Permit, RateRequest

from .redis_support import redis_url

pytestmark = pytest.mark.anyio


async def _limit_keys(prefix: str) -> dict[str, int]:
    """The limit keys under ``prefix`` and the ms each has left to live (-1: no expiry)."""
    async with aioredis.Redis.from_url(services.REDIS_URL, decode_responses=True) as raw:
        keys = [k async for k in raw.scan_iter(f"{prefix}:limit:*")]
        keys += [k async for k in raw.scan_iter(f"{prefix}:conc:*")]
        return {key: await raw.pttl(key) for key in keys}


async def test_a_limits_keys_share_its_own_slot_and_expire_once_quiet(prefix: str) -> None:
    app = asyncq.App(redis_url(prefix))
    store = app.backend.store
    async with app:
        rate = [RateRequest("sync|tenant-7", 1, 0.3, f"job{i}:1") for i in range(2)]
        assert (await store.take_rate_permits(rate))[1] > 0  # the second waits: a line
        held = ConcurrencyRequest("post|acct-9", 1, "job-a", lease=0.3)
        assert await store.take_concurrency_permits([held]) == [0.0]
        (wait,) = await store.take_concurrency_permits(
            [ConcurrencyRequest("post|acct-9", 1, "job-b", lease=0.3, ticket=1)]
        )
        assert wait > 0
        await store.release_concurrency_permits([Permit("post|acct-9", "job-a")], [0.01])
        keys = await _limit_keys(prefix)
        # The rate's log and waiters, the concurrency limit's waiters, line and hold average
        # (its holders went with the last permit): each limit's keys in one slot, every key
        # with an expiry.
        suffixes = sorted(key.rsplit("}", 1)[1] for key in keys)
        assert suffixes == ["", ":hold", ":line", ":wait", ":wait"], keys
        tags: dict[str, set[int]] = {}
        for key in keys:
            tag = key.split("{", 1)[1].split("}", 1)[0]
            tags.setdefault(tag, set()).add(key_slot(key.encode()))
        assert sorted(tags) == ["post|acct-9", "sync|tenant-7"]
        assert all(len(slots) == 1 for slots in tags.values())
        assert all(ttl > 0 for ttl in keys.values()), keys
        # Quiet: the rate's keys go within a window and a grace, the waiters' within their
        # wait and a grace (the line and the hold average stay longer: days, and one day).
        await anyio.sleep(3.5)  # not a wait for something: the expiry being tested
        left = await _limit_keys(prefix)
        assert all(k.endswith((":line", ":hold")) for k in left), left
