"""The hot commands' connection (``asyncq_redis.wire``): replies reach their own callers
whatever else is in flight, error replies are the caller's alone, and a connection that is
killed or stops answering is replaced without the caller seeing more than that one error."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import anyio
import pytest
import services
from asyncq_redis import RedisBackend
from redis import exceptions as rx

import asyncq

from .redis_support import PrivateRedis, redis_client, redis_url

pytestmark = pytest.mark.anyio


def _wire(app: asyncq.App) -> object:
    backend = app.backend
    assert isinstance(backend, RedisBackend)
    return backend._redis.wire


async def test_concurrent_calls_get_their_own_replies(prefix: str) -> None:
    async with asyncq.App(redis_url(prefix)) as app:
        wire: object = _wire(app)
        replies: dict[int, object] = {}

        async def call(i: int) -> None:
            if i % 3:
                replies[i] = await wire.call("ECHO", f"one {i}")  # type: ignore[attr-defined]
            else:
                (a, b) = await wire.execute([("ECHO", f"a {i}"), ("ECHO", f"b {i}")])  # type: ignore[attr-defined]
                replies[i] = (a, b)

        async with anyio.create_task_group() as tg:
            for i in range(300):
                tg.start_soon(call, i)
        for i, reply in replies.items():
            expected = (f"a {i}".encode(), f"b {i}".encode()) if i % 3 == 0 else f"one {i}".encode()
            assert reply == expected
        assert len(replies) == 300


async def test_a_cancelled_call_does_not_shift_the_replies(prefix: str) -> None:
    async with asyncq.App(redis_url(prefix)) as app:
        wire: object = _wire(app)
        for i in range(20):
            with anyio.CancelScope() as scope:
                scope.cancel()  # cancelled at its first wait: the command is already sent
                await wire.call("ECHO", f"lost {i}")  # type: ignore[attr-defined]
            assert await wire.call("ECHO", f"kept {i}") == f"kept {i}".encode()  # type: ignore[attr-defined]


async def test_an_error_reply_is_the_callers_alone(prefix: str) -> None:
    async with asyncq.App(redis_url(prefix)) as app:
        wire: object = _wire(app)
        with pytest.raises(rx.NoScriptError):
            await wire.call("EVALSHA", "0" * 40, 0)  # type: ignore[attr-defined]
        replies = await wire.execute([("ECHO", "x"), ("NOSUCHCOMMAND",), ("ECHO", "y")])  # type: ignore[attr-defined]
        assert replies[0] == b"x" and replies[2] == b"y"
        assert isinstance(replies[1], rx.ResponseError)
        assert "NOSUCHCOMMAND" in str(replies[1]).upper()


async def test_a_killed_connection_is_replaced(prefix: str) -> None:
    async with asyncq.App(redis_url(prefix)) as app:
        wire: object = _wire(app)
        first = await wire.call("CLIENT", "ID")  # type: ignore[attr-defined]
        backend = app.backend
        assert isinstance(backend, RedisBackend)
        assert await redis_client(app).execute_command("CLIENT", "KILL", "ID", first) == 1
        # The next call finds the connection gone and is sent again on a new one.
        second = await wire.call("CLIENT", "ID")  # type: ignore[attr-defined]
        assert second != first
        assert await wire.call("ECHO", "after") == b"after"  # type: ignore[attr-defined]
        # Jobs still go through it.

        @app.task
        async def work() -> None:
            pass

        job = await work.enqueue()
        assert await job.status() is asyncq.JobStatus.QUEUED


async def test_a_connection_that_stops_answering_times_out_and_is_replaced(
    tmp_path: Path,
) -> None:
    server = PrivateRedis(services.require_redis_server(), tmp_path)
    await server.start()
    try:
        options = {"socket_timeout": 0.3, "retry_on_timeout": "false"}
        async with asyncq.App(f"{server.url}?{urlencode(options)}") as app:
            wire: Any = _wire(app)
            first = await wire.call("CLIENT", "ID")
            assert server.process is not None
            server.process.send_signal(signal.SIGSTOP)  # no replies from here on
            try:
                with anyio.fail_after(5), pytest.raises(rx.TimeoutError, match="no reply"):
                    await wire.call("ECHO", "held")
            finally:
                server.process.send_signal(signal.SIGCONT)
            with anyio.fail_after(5):
                assert await wire.call("ECHO", "after") == b"after"
                second = await wire.call("CLIENT", "ID")
            assert second != first
    finally:
        await server.kill()
