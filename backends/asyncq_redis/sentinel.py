"""Redis Sentinel: ``redis+sentinel://[user:password@]host:port[,host:port...]/service[/db]``
(``rediss+sentinel://`` for TLS to the master).

The URL names the sentinels and the service (the ``sentinel monitor`` name); the client
asks the sentinels for the service's master whenever it opens a connection, so after a
failover new connections reach the promoted replica. A connection still open to the old
master fails (its socket closes, or the demoted server answers ``READONLY``), and the call
is sent again on a new one, with the retries of a dropped connection. The user and password
are the master's; the sentinels are asked without a password.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.sentinel import (
    Sentinel,
    SentinelManagedConnection,
    SentinelManagedSSLConnection,
)

from asyncq.backend import redact_url
from asyncq.errors import ConfigurationError

from .wire import pack_args

__all__ = [
    "SENTINEL_SCHEMES",
    "OneAtATimeSentinel",
    "SentinelTarget",
    "open_sentinel_client",
    "sentinel_target",
]

SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
DEFAULT_SENTINEL_PORT = 26379


@dataclass(frozen=True, slots=True)
class SentinelTarget:
    """Where a ``redis+sentinel://`` URL points."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    ssl: bool = False


def sentinel_target(url: str) -> SentinelTarget:
    """The sentinels, service, db and credentials of ``url``; a ConfigurationError saying
    what is wrong otherwise."""
    parts = urlsplit(url)
    shown = redact_url(url)
    netloc = parts.netloc.rpartition("@")[2]
    sentinels = []
    for item in netloc.split(","):
        host, _, port = item.rpartition(":") if ":" in item else (item, "", "")
        if not host:
            raise ConfigurationError(f"a sentinel without a host in Redis URL {shown!r}")
        try:
            number = int(port) if port else DEFAULT_SENTINEL_PORT
        except ValueError:
            raise ConfigurationError(f"bad sentinel port {port!r} in Redis URL {shown!r}") from None
        if not 0 < number < 65536:
            raise ConfigurationError(f"bad sentinel port {port!r} in Redis URL {shown!r}")
        sentinels.append((host, number))
    path = [p for p in parts.path.split("/") if p]
    if not path or len(path) > 2:
        raise ConfigurationError(
            f"a Sentinel URL names its service and, if not 0, its db: "
            f"redis+sentinel://host:26379/mymaster/0, got {shown!r}"
        )
    if len(path) == 2 and not path[1].isdigit():
        raise ConfigurationError(f"the Redis db in the URL must be a number, got {path[1]!r}")
    return SentinelTarget(
        tuple(sentinels),
        unquote(path[0]),
        int(path[1]) if len(path) == 2 else 0,
        unquote(parts.username) if parts.username else None,
        unquote(parts.password) if parts.password else None,
        parts.scheme.startswith("rediss"),
    )


class HiredisSentinelConnection(SentinelManagedConnection):
    def pack_command(self, *args: Any) -> list[bytes]:
        return pack_args(args)


class HiredisSentinelSSLConnection(SentinelManagedSSLConnection):
    def pack_command(self, *args: Any) -> list[bytes]:
        return pack_args(args)


class OneAtATimeSentinel(Sentinel):
    """redis-py's Sentinel, asking the sentinels for the master one call at a time.

    Its ``discover_master`` moves the sentinel that answered to the front of its list. Two
    calls that interleave (every connection of the pool reconnecting after a failover) can
    both swap with the same stale first entry, leaving one sentinel in the list twice and
    dropping another, whose open connection then leaks. One at a time, the list stays a
    permutation of the sentinels; the callers after the first get their answer one round
    trip later."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._asking = asyncio.Lock()

    async def discover_master(self, service_name: str) -> Any:
        async with self._asking:
            return await super().discover_master(service_name)


def open_sentinel_client(target: SentinelTarget, **settings: Any) -> aioredis.Redis:
    """A client of ``target``'s master, found through its sentinels; ``settings`` are the
    connection pool's (timeouts, retry, pool size, client name)."""
    sentinel = OneAtATimeSentinel(
        list(target.sentinels),
        socket_timeout=settings.get("socket_timeout"),
        socket_connect_timeout=settings.get("socket_connect_timeout"),
    )
    connection_class = HiredisSentinelSSLConnection if target.ssl else HiredisSentinelConnection
    client: aioredis.Redis = sentinel.master_for(
        target.service,
        connection_class=connection_class,
        db=target.db,
        username=target.username,
        password=target.password,
        **settings,
    )
    return client
