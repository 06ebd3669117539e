"""Where asyncq keeps its data in Redis: every key of a queue under one hash tag (so a queue
lives in one Redis Cluster slot), in the db the URL names, under the URL's prefix; and how
the URL's options are checked."""

from __future__ import annotations

import re
from collections import defaultdict
from datetime import UTC, datetime

import pytest
import redis.asyncio as aioredis
import services
from harness import Settled
from redis.crc import key_slot

import asyncq
from asyncq import JobStatus
from asyncq.backend import Outcome
from asyncq.periodic import fire

from .redis_support import redis_url


async def _keys(url: str, prefix: str) -> list[str]:
    async with aioredis.Redis.from_url(url, decode_responses=True) as raw:
        return [key async for key in raw.scan_iter(f"{prefix}:*", count=1000)]


@pytest.mark.anyio
async def test_every_key_of_a_queue_is_under_its_hash_tag(
    prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = asyncq.App(redis_url(prefix))

    @app.task(queue="orders")
    async def ok(n: int) -> int:
        return n

    @app.task(queue="orders")
    async def rejected() -> None:
        raise asyncq.Reject("no such order")

    @app.task(queue="orders")
    async def later() -> None:
        raise asyncq.Retry(delay=60)

    @app.task(queue="emails")
    async def email() -> None:
        pass

    settled = Settled(monkeypatch, app.backend)
    async with app:
        keyed = await ok.options(key="order-42").enqueue(42)
        delayed = await ok.options(delay=60).enqueue(1)
        dead = await rejected.enqueue()
        retrying = await later.enqueue()
        waiting = await email.enqueue()  # no worker consumes "emails": it stays queued
        async with app.worker(queues=["orders"]):
            assert await keyed.result(timeout=5) == 42
            await settled.outcome(dead.id, Outcome.DEAD)
            await settled.outcome(retrying.id, Outcome.RETRY)
            # Scanned while the worker runs, so its heartbeat key is there too.
            keys = await _keys(services.REDIS_URL, prefix)
        assert await delayed.status() is JobStatus.SCHEDULED
        assert await retrying.status() is JobStatus.FAILED
        assert await waiting.status() is JobStatus.QUEUED
        assert [d.id for d in await app.dead_letters("orders")] == [dead.id]

    tagged = re.compile(rf"^{re.escape(prefix)}:(\{{(?:orders|emails)\}}):([a-z]+)(?::.+)?$")
    by_tag: defaultdict[str, set[str]] = defaultdict(set)
    kinds: defaultdict[str, set[str]] = defaultdict(set)
    global_keys = []
    for key in keys:
        match = tagged.match(key)
        if match:
            by_tag[match[1]].add(key)
            kinds[match[1]].add(match[2])
        else:
            global_keys.append(key)
    # Only the registry of queue names and the workers' heartbeats (a hash and a sorted
    # set, under a hash tag of their own) are outside any queue.
    assert sorted(global_keys) == [
        f"{prefix}:queues",
        f"{prefix}:{{workers}}",
        f"{prefix}:{{workers}}:forget",
    ], global_keys
    assert key_slot(f"{prefix}:{{workers}}".encode()) == key_slot(
        f"{prefix}:{{workers}}:forget".encode()
    )
    # Each queue's records, idempotency keys, stream, delayed set and dead letters ...
    assert kinds["{orders}"] == {"stream", "scheduled", "dead", "job", "key", "minute"}
    assert f"{prefix}:{{orders}}:key:order-42" in by_tag["{orders}"]
    assert f"{prefix}:{{orders}}:job:{keyed.id}" in by_tag["{orders}"]
    assert kinds["{emails}"] == {"stream", "job"}  # nothing of it ended: no minute counted
    # ... share one cluster slot.
    for queue_keys in by_tag.values():
        assert len({key_slot(key.encode()) for key in queue_keys}) == 1


@pytest.mark.anyio
async def test_the_db_comes_from_the_url(prefix: str) -> None:
    db14 = "redis://127.0.0.1:6379/14"
    app = asyncq.App(redis_url(prefix, db=14))

    @app.task
    async def work() -> None:
        pass

    try:
        async with app:
            job = await work.enqueue()
            assert await job.status() is JobStatus.QUEUED
        in_14 = await _keys(db14, prefix)
        in_15 = await _keys(services.REDIS_URL, prefix)
    finally:
        services.delete_redis_keys(prefix, db14)
    assert f"{prefix}:{{default}}:job:{job.id}" in in_14
    assert in_15 == []


def _resolve(url: str) -> asyncq.Backend:
    return asyncq.App(url).backend


@pytest.mark.parametrize("option", ["bogus", "client_name", "health_check_interval", "db"])
def test_an_unknown_url_option_is_an_error_naming_it(option: str) -> None:
    # Options redis-py itself would take (client_name, health_check_interval, db) are refused
    # too: the backend's settings are the whole of its configuration.
    with pytest.raises(asyncq.ConfigurationError, match=f"unknown option '{option}'"):
        _resolve(f"redis://127.0.0.1:6379/15?prefix=p&{option}=1")


@pytest.mark.parametrize(
    ("query", "option"),
    [
        ("visibility_timeout=0", "visibility_timeout"),
        ("visibility_timeout=soon", "visibility_timeout"),
        ("result_ttl=-1", "result_ttl"),
        ("max_connections=0", "max_connections"),
        ("prefix=a{b", "prefix"),
        ("prefix=a}b", "prefix"),
        ("prefix={orders}", "prefix"),
        ("prefix=%7Borders%7D", "prefix"),
        ("prefix=a:b", "prefix"),
        ("prefix=", "prefix"),
    ],
)
def test_a_bad_option_value_is_an_error_naming_the_option(query: str, option: str) -> None:
    with pytest.raises(asyncq.ConfigurationError, match=f"for option '{option}'"):
        _resolve(f"redis://127.0.0.1:6379/15?{query}")


def test_a_db_that_is_not_a_number_is_an_error() -> None:
    with pytest.raises(asyncq.ConfigurationError, match="must be a number"):
        _resolve("redis://127.0.0.1:6379/fifteen?prefix=p")


@pytest.mark.anyio
async def test_schedules_of_apps_with_different_prefixes_never_collide(prefix: str) -> None:
    """Two Apps on one Redis, each with a schedule named "nightly": each fires its own slot,
    and pausing one pauses only that one."""
    first, second = asyncq.App(redis_url(f"{prefix}-a")), asyncq.App(redis_url(f"{prefix}-b"))
    slot = datetime(2026, 12, 2, 3, 0, tzinfo=UTC)
    try:
        for app in (first, second):

            @app.periodic("0 3 * * *", name="nightly")
            async def nightly() -> None: ...

        async with first, second:
            assert await fire(first, first.schedules["nightly"], slot)
            assert await fire(second, second.schedules["nightly"], slot)  # its own slot
            a = await first.backend.store.schedule_state("nightly")
            b = await second.backend.store.schedule_state("nightly")
            assert a.last_slot == b.last_slot == slot and a.last_job != b.last_job
            await first.backend.store.pause_schedule("nightly", True)
            assert (await first.backend.store.schedule_state("nightly")).paused
            assert not (await second.backend.store.schedule_state("nightly")).paused
            keys = await _keys(services.REDIS_URL, f"{prefix}-a")
    finally:
        services.delete_redis_keys(f"{prefix}-a")
        services.delete_redis_keys(f"{prefix}-b")
    assert keys and all(key.startswith(f"{prefix}-a:") for key in keys)
