"""How soon a lost worker's job runs again on Redis, and what an idle worker does meanwhile.

A SIGKILLed worker's job restarts within a second of its lease running out, with the default
visibility timeout too, and when the worker that takes it over comes up after the kill; an
abandoned entry is found behind any number of live ones; an idle worker on default settings
logs nothing and keeps its connections, whatever redis-py's socket timeout."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis.asyncio as aioredis
import services
from asyncq_redis import RedisBackend
from harness import Lines, kill_and_take_over, worker_process

from asyncq.backend import Delivery, Envelope

from .redis_support import PrivateRedis, redis_url

pytestmark = pytest.mark.anyio


@pytest.mark.slow
async def test_lost_workers_job_restarts_within_a_second_of_its_lease_running_out(
    prefix: str, tmp_path: Path
) -> None:
    # The worker that takes over starts 1.25 s after the kill: however its looks for
    # abandoned entries fall, one comes within a second of the lease running out.
    visibility_timeout = 6.0
    url = redis_url(prefix, visibility_timeout=visibility_timeout)
    waited = await kill_and_take_over(
        url, tmp_path, visibility_timeout=visibility_timeout, replacement_after=1.25
    )
    print(f"vt {visibility_timeout:g} s: the lost job restarted {waited:.2f} s after the kill")
    assert visibility_timeout - 1.0 <= waited <= visibility_timeout + 1.0, waited


@pytest.mark.slow
async def test_lost_workers_job_restarts_within_a_second_of_the_default_lease(
    prefix: str, tmp_path: Path
) -> None:
    url = redis_url(prefix)  # visibility_timeout 30 s, every other setting a default too
    waited = await kill_and_take_over(url, tmp_path, visibility_timeout=30.0)
    print(f"defaults: the lost worker's job restarted {waited:.2f} s after the kill")
    assert 29.0 <= waited <= 31.0, waited


async def test_an_abandoned_entry_behind_many_live_ones_is_taken_over(prefix: str) -> None:
    # XAUTOCLAIM looks at ten pending entries per entry it may claim: a worker with one free
    # slot that always looked from the start of the pending list would only ever see the
    # first ten of these 1,500 live entries, never the abandoned one behind them.
    visibility_timeout = 1.0
    url = redis_url(prefix, visibility_timeout=visibility_timeout)
    live, lost, rescuer = (RedisBackend.from_url(url) for _ in range(3))

    def envelopes(n: int) -> list[Envelope]:
        return [Envelope(uuid.uuid4().hex, "default", b"{}", task="t") for _ in range(n)]

    async def keep_fresh(deliveries: list[Delivery]) -> None:
        while True:  # a live worker's lease renewal, more often than it needs to be
            await live.renew(deliveries)
            await anyio.sleep(visibility_timeout / 5)

    for backend in (live, lost, rescuer):
        await backend.connect()
    try:
        await live.enqueue(envelopes(1500))
        held = await live.fetch(["default"], 1500, timeout=0)
        assert len(held) == 1500
        (abandoned_id,) = await lost.enqueue(envelopes(1))
        (abandoned,) = await lost.fetch(["default"], 1, timeout=0)
        assert abandoned.id == abandoned_id
        async with anyio.create_task_group() as tg:
            tg.start_soon(keep_fresh, held)
            taken: list[Delivery] = []
            with anyio.fail_after(visibility_timeout + 5):
                while not taken:  # an idle worker's fetch loop, with one free slot
                    taken = await rescuer.fetch(["default"], 1, timeout=0.5)
            tg.cancel_scope.cancel()
    finally:
        for backend in (live, lost, rescuer):
            await backend.close()
    assert [(d.id, d.redelivered) for d in taken] == [(abandoned_id, True)]


async def _connections_received(client: aioredis.Redis) -> int:
    stats: Any = await client.info("stats")
    return int(stats["total_connections_received"])


async def _blocking_read_sent(client: aioredis.Redis) -> bool:
    return any(c.get("cmd") == "xreadgroup" for c in await client.client_list())


@pytest.mark.slow
async def test_an_idle_worker_on_default_settings_logs_nothing_and_keeps_its_connections(
    tmp_path: Path,
) -> None:
    # On its own server, so that every connection made to it is the worker's or this test's.
    # redis-py 8 gives up on a reply after 5 s by default, and an idle worker's blocking
    # read lasts 5 s (its fetch timeout): through the client, that read timed out, was
    # retried on a new connection, and at last logged a failed fetch.
    server = PrivateRedis(services.require_redis_server(), tmp_path)
    try:
        await server.start()
        url = f"{server.url}?prefix=idle"
        async with (
            aioredis.Redis.from_url(server.url) as observer,
            worker_process("apps.good:app", url) as process,
        ):
            stderr = Lines(process.stderr)
            await stderr.expect(lambda line: "started: queues=" in line, timeout=30)
            # Its first heartbeat written and its blocking read sent: every loop is running,
            # and every connection it keeps is open.
            with anyio.fail_after(10):
                while not (  # noqa: ASYNC110 - the server's state, which sends no event
                    await observer.hlen("idle:{workers}") and await _blocking_read_sent(observer)
                ):
                    await anyio.sleep(0.05)
            before = await _connections_received(observer)
            # The span under test: idle for longer than the socket timeout plus a block.
            await anyio.sleep(12.0)
            after = await _connections_received(observer)
            process.kill()
            await stderr.rest(timeout=10)
    finally:
        await server.kill()
    log = "\n".join(stderr.seen)
    print(log)
    assert after == before, f"{after - before} new connection(s) while idle:\n{log}"
    assert "WARNING" not in log and "ERROR" not in log, log
