"""The Redis client's connection options: ``socket_timeout``, ``socket_connect_timeout`` and
``retry_on_timeout`` in the broker URL (and in an AMQP broker's ``records=`` URL), checked,
and applied to the connection pool whatever redis-py's own defaults; and a worker's blocking
fetch, which no socket timeout cuts short."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import anyio
import pytest
import services
from asyncq_redis import RedisBackend
from asyncq_redis.records import RedisStore
from redis import exceptions as rx

import asyncq

from .redis_support import PrivateRedis, redis_client, redis_url


def _pool_options(client: Any) -> dict[str, Any]:
    options: dict[str, Any] = client.connection_pool.connection_kwargs
    return options


@pytest.mark.anyio
async def test_the_client_timeouts_are_asyncqs_own_unless_the_url_sets_them(prefix: str) -> None:
    # Explicit defaults: redis-py 8 waits 5 s for a reply on its own, earlier releases
    # forever; asyncq's client waits 5 s on every release.
    async with asyncq.App(redis_url(prefix)) as app:
        defaults = _pool_options(redis_client(app))
    async with asyncq.App(
        redis_url(prefix, socket_timeout=2.5, socket_connect_timeout=1.5, retry_on_timeout="false")
    ) as app:
        chosen = _pool_options(redis_client(app))
        await redis_client(app).ping()
    assert (defaults["socket_timeout"], defaults["socket_connect_timeout"]) == (5.0, 5.0)
    assert rx.TimeoutError in defaults["retry_on_error"]
    assert (chosen["socket_timeout"], chosen["socket_connect_timeout"]) == (2.5, 1.5)
    assert rx.TimeoutError not in chosen["retry_on_error"]
    assert rx.ConnectionError in chosen["retry_on_error"]  # a dropped connection still is


@pytest.mark.anyio
@pytest.mark.parametrize("retry_on_timeout", [True, False])
async def test_retry_on_timeout_decides_whether_a_timed_out_command_is_tried_again(
    prefix: str, retry_on_timeout: bool
) -> None:
    # BLPOP on an empty list blocks for 2 s, longer than the 0.2 s socket timeout: each try
    # times out. Without retries the error comes after one try; with them, after seven
    # tries and the backoff between them (about 1.5 s).
    url = redis_url(prefix, socket_timeout=0.2, retry_on_timeout=str(retry_on_timeout).lower())
    async with asyncq.App(url) as app:
        started = time.monotonic()
        with pytest.raises(rx.TimeoutError):
            await redis_client(app).blpop([f"{prefix}:empty"], timeout=2)
        took = time.monotonic() - started
    if retry_on_timeout:
        assert took > 1.5, took
    else:
        assert took < 1.0, took


BAD_VALUES = [
    ("socket_timeout=0", "socket_timeout", "must be a number > 0"),
    ("socket_timeout=-1", "socket_timeout", "must be a number > 0"),
    ("socket_timeout=soon", "socket_timeout", "could not convert"),
    ("socket_timeout=nan", "socket_timeout", "must be a number > 0"),
    ("socket_timeout=301", "socket_timeout", "must be at most 300 seconds"),
    ("socket_timeout=inf", "socket_timeout", "must be at most 300 seconds"),
    ("socket_connect_timeout=0", "socket_connect_timeout", "must be a number > 0"),
    ("socket_connect_timeout=1e9", "socket_connect_timeout", "must be at most 300 seconds"),
    ("retry_on_timeout=yes", "retry_on_timeout", "must be true or false"),
    ("retry_on_timeout=", "retry_on_timeout", "must be true or false"),
]


@pytest.mark.parametrize(("query", "option", "why"), BAD_VALUES)
def test_a_bad_connection_option_is_one_line_naming_it(query: str, option: str, why: str) -> None:
    with pytest.raises(asyncq.ConfigurationError) as caught:
        _ = asyncq.App(f"redis://127.0.0.1:6379/15?prefix=p&{query}").backend
    message = str(caught.value)
    assert f"for option '{option}'" in message and why in message, message
    assert "\n" not in message


@pytest.mark.parametrize(("query", "option", "why"), BAD_VALUES)
def test_a_bad_connection_option_in_a_records_url_is_one_line_naming_it(
    query: str, option: str, why: str
) -> None:
    # The AMQP backend's job records live in Redis, reached through the same client; its
    # records URL takes the same options (percent-encoded inside the broker URL).
    records = f"redis://127.0.0.1:6379/15?{query}".replace("?", "%3F").replace("=", "%3D")
    with pytest.raises(asyncq.ConfigurationError) as caught:
        _ = asyncq.App(f"{services.AMQP_URL}?records={records}").backend
    message = str(caught.value)
    assert f"for option '{option}'" in message and why in message, message
    assert "\n" not in message


@pytest.mark.anyio
async def test_a_records_url_sets_the_stores_connection_options(prefix: str) -> None:
    # What the AMQP backend hands its record store: the records URL as given. asyncq's own
    # options are taken out and applied; the rest is left to redis-py, as before.
    url = f"{services.REDIS_URL}?socket_timeout=2.5&retry_on_timeout=false&client_name={prefix}"
    store = RedisStore(url, prefix=prefix, scripts={}, max_connections=4, owner="a test")
    await store.connect()
    try:
        options = _pool_options(store.client)
        name = await store.client.client_getname()
    finally:
        await store.close()
    assert options["socket_timeout"] == 2.5
    assert options["socket_connect_timeout"] == 5.0
    assert rx.TimeoutError not in options["retry_on_error"]
    assert name in (prefix, prefix.encode())


@pytest.mark.anyio
async def test_a_socket_timeout_shorter_than_the_block_never_fails_an_idle_fetch(
    prefix: str,
) -> None:
    # The blocking read waits for its block plus the socket timeout: a short socket timeout
    # bounds every other command, never an idle worker's wait for jobs.
    app = asyncq.App(redis_url(prefix, socket_timeout=0.2))
    async with app:
        backend = app.backend
        assert isinstance(backend, RedisBackend)
        for _ in range(2):
            started = time.monotonic()
            with anyio.fail_after(5):
                assert await backend.fetch(["default"], 1, timeout=1.0) == []
            assert time.monotonic() - started >= 0.9
        # The connection the blocking reads used went back to the pool in working order.
        assert await redis_client(app).ping()


@pytest.mark.anyio
async def test_the_server_s_bulk_limit_is_the_largest_job(tmp_path: Path) -> None:
    # proto-max-bulk-len caps each argument of a command, so a job's body: a server set to
    # 1 MiB refuses larger ones, and asyncq refuses them first, sending nothing.
    server = PrivateRedis(
        services.require_redis_server(), tmp_path, "--proto-max-bulk-len", "1048576"
    )
    await server.start()
    try:
        app = asyncq.App(f"{server.url}?prefix=tbulk")

        @app.task
        async def store(blob: str) -> None:
            pass

        async with app:
            assert app.backend.max_message_size == 1024 * 1024
            with pytest.raises(asyncq.MessageTooLarge, match="accepts at most 1,048,576 bytes"):
                await store.enqueue("x" * (2 * 1024 * 1024))
            assert (await app.queue_stats([app.default_queue]))[app.default_queue].pending == 0
        # A URL may ask for less than the server allows, not more.
        for asked, limit in ((4096, 4096), (8 * 1024 * 1024, 1024 * 1024)):
            async with asyncq.App(f"{server.url}?prefix=tbulk&max_message_size={asked}") as other:
                assert other.backend.max_message_size == limit
    finally:
        await server.kill()
