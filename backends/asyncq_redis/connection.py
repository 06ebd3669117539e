"""redis-py connections whose commands are encoded by hiredis, and the client asyncq
builds on them.

A worker's hot commands are EVALSHA calls carrying hundreds of arguments (a batch of
settlements); hiredis encodes them in C, about five times faster than redis-py's own
Python encoder, which the asyncio client uses even when hiredis is installed.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import hiredis
import redis.asyncio as aioredis
from redis import exceptions as rx
from redis.asyncio.connection import Connection, SSLConnection
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from asyncq.errors import BrokerError, BrokerUnavailable

from .settings import RedisConnection

__all__ = ["HiredisConnection", "HiredisSSLConnection", "open_client", "redis_errors"]


def _pack(args: tuple[Any, ...]) -> list[bytes]:
    # redis-py lets a command name carry its subcommand ("CONFIG GET"); the server wants
    # them as separate arguments.
    if isinstance(args[0], str) and " " in args[0]:
        args = (*args[0].split(), *args[1:])
    return [hiredis.pack_command(args)]


class HiredisConnection(Connection):
    def pack_command(self, *args: Any) -> list[bytes]:
        return _pack(args)


class HiredisSSLConnection(SSLConnection):
    def pack_command(self, *args: Any) -> list[bytes]:
        return _pack(args)


class _Retry(Retry):
    """redis-py's retry, except for refused credentials: redis-py counts those as a dropped
    connection (AuthenticationError is a ConnectionError), but trying again cannot help, and
    would only delay the error by the whole backoff."""

    async def call_with_retry(self, do: Any, fail: Any, *args: Any, **kwargs: Any) -> Any:
        async def once() -> Any:
            try:
                return await do()
            except rx.AuthenticationError as exc:
                raise _Refused(exc) from exc

        try:
            return await super().call_with_retry(once, fail, *args, **kwargs)
        except _Refused as refused:
            raise refused.error from None


class _Refused(Exception):
    """Carries an AuthenticationError past the retry, which would otherwise catch it."""

    def __init__(self, error: rx.AuthenticationError) -> None:
        super().__init__(str(error))
        self.error = error


def open_client(
    connection: RedisConnection, *, max_connections: int, client_name: str | None = None
) -> aioredis.Redis:
    """A client on a blocking pool of hiredis-encoding connections.

    Its timeouts are set here, whatever redis-py's defaults (they changed in 8.0). Commands
    that fail on a dropped connection (or, with ``retry_on_timeout``, that time out) are
    retried a few times with backoff, about 1.5 s in all, before the error reaches the
    caller. A burst of concurrent calls beyond the pool's size waits for a connection
    instead of failing. ``client_name`` names every connection (``CLIENT SETNAME``).
    """
    retried: tuple[type[rx.RedisError], ...] = (rx.ConnectionError,)
    if connection.retry_on_timeout:
        retried += (rx.TimeoutError,)
    url = connection.url
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        connection_class=HiredisSSLConnection if url.startswith("rediss:") else HiredisConnection,
        max_connections=max_connections,
        timeout=30,
        retry=_Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=6, supported_errors=retried),
        # The retried errors are named here; redis-py's own retry_on_timeout would append
        # to this list on every new connection.
        retry_on_error=list(retried),
        retry_on_timeout=False,
        socket_timeout=connection.socket_timeout,
        socket_connect_timeout=connection.socket_connect_timeout,
        health_check_interval=30,
        client_name=client_name,
    )
    return aioredis.Redis(connection_pool=pool)


@contextmanager
def redis_errors(where: str, action: str) -> Iterator[None]:
    """Map redis-py's exceptions to asyncq's at the boundary; ``where`` is the redacted URL."""
    try:
        yield
    except (rx.ConnectionError, rx.TimeoutError, OSError) as exc:
        raise BrokerUnavailable(f"Redis at {where} unreachable {action}: {exc}") from exc
    except rx.RedisError as exc:
        raise BrokerError(f"Redis failed {action}: {exc}") from exc
