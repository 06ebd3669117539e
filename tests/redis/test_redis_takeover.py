"""What an idle worker does on Redis: on default settings it logs nothing and keeps its
connections, whatever redis-py's socket timeout."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis.asyncio as aioredis
import services
from harness import Lines, worker_process
from redis_support import PrivateRedis, claimed_prefix

pytestmark = pytest.mark.anyio


@pytest.fixture
def prefix(unique: str) -> Iterator[str]:
    with claimed_prefix(unique) as prefix:
        yield prefix


async def _connections_received(client: aioredis.Redis) -> int:
    stats: Any = await client.info("stats")
    return int(stats["total_connections_received"])


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
            with anyio.fail_after(10):  # its first heartbeat: every loop is running
                while not await observer.keys("idle:worker:*"):  # noqa: ASYNC110
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
