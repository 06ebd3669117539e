"""redis-py connections whose commands are encoded by hiredis, and the client asyncq
builds on them.

A worker's hot commands are EVALSHA calls carrying hundreds of arguments (a batch of
settlements); hiredis encodes them in C, about five times faster than redis-py's own
Python encoder, which the asyncio client uses even when hiredis is installed.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis import exceptions as rx
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import Connection, SSLConnection
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from asyncq.errors import BrokerError, BrokerUnavailable

from .cluster_wire import ClusterWire
from .sentinel import SENTINEL_SCHEMES, open_sentinel_client, sentinel_target
from .settings import RedisConnection
from .wire import Calls, Wire, pack_args

__all__ = [
    "HiredisConnection",
    "HiredisSSLConnection",
    "is_cluster",
    "node_client",
    "node_name",
    "open_client",
    "open_wire",
    "primary_names",
    "redis_errors",
]


class HiredisConnection(Connection):
    def pack_command(self, *args: Any) -> list[bytes]:
        return pack_args(args)


class HiredisSSLConnection(SSLConnection):
    def pack_command(self, *args: Any) -> list[bytes]:
        return pack_args(args)


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


def _retry(retried: tuple[type[rx.RedisError], ...]) -> _Retry:
    """About 1.5 s of tries with backoff, for the errors ``retried`` names."""
    return _Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=6, supported_errors=retried)


def open_client(
    connection: RedisConnection, *, max_connections: int, client_name: str | None = None
) -> aioredis.Redis:
    """A client on a blocking pool of hiredis-encoding connections (of a cluster's client,
    or through Sentinel, where the URL says so).

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
    if connection.cluster:
        return _open_cluster(connection, retried, max_connections, client_name)
    common: dict[str, Any] = {
        "max_connections": max_connections,
        "retry": _retry(retried),
        # The retried errors are named here; redis-py's own retry_on_timeout would append
        # to this list on every new connection.
        "retry_on_error": list(retried),
        "retry_on_timeout": False,
        "socket_timeout": connection.socket_timeout,
        "socket_connect_timeout": connection.socket_connect_timeout,
        "health_check_interval": 30,
        "client_name": client_name,
    }
    if urlsplit(url).scheme in SENTINEL_SCHEMES:
        return open_sentinel_client(sentinel_target(url), **common)
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        connection_class=HiredisSSLConnection if url.startswith("rediss:") else HiredisConnection,
        timeout=30,
        **common,
    )
    return aioredis.Redis(connection_pool=pool)


def _open_cluster(
    connection: RedisConnection,
    retried: tuple[type[rx.RedisError], ...],
    max_connections: int,
    client_name: str | None,
) -> aioredis.Redis:
    """redis-py's cluster client, with the timeouts and retry of ``open_client``; each node
    gets a pool of ``max_connections``. Typed as the single-server client, whose commands
    it answers: asyncq sends it only commands of one key, or of one slot."""
    cluster = RedisCluster.from_url(
        connection.url,
        max_connections=max_connections,
        retry=_retry(retried),
        socket_timeout=connection.socket_timeout,
        socket_connect_timeout=connection.socket_connect_timeout,
        health_check_interval=30,
        client_name=client_name,
    )
    return cast(aioredis.Redis, cluster)


def is_cluster(client: aioredis.Redis | Any) -> bool:
    return isinstance(client, RedisCluster)


def open_wire(client: aioredis.Redis, *, timed: bool = True) -> Calls:
    """The hot commands' connection of ``client``: one ``Wire``, or one per master of a
    cluster (a ``ClusterWire``)."""
    if is_cluster(client):
        return ClusterWire(client, timed=timed)
    return Wire(client, timed=timed)


def node_client(cluster: aioredis.Redis, key: str | None = None) -> aioredis.Redis:
    """A single-server client on one master of ``cluster``: the master of ``key``'s slot, or
    any. For what must stay on one node, such as a subscription to notifications: a
    PUBLISH anywhere in a cluster reaches the subscribers on every node."""
    nodes: Any = cast(Any, cluster)
    if key is None:
        node = random.choice(nodes.get_primaries())
    else:
        node = nodes.get_node_from_key(key)
    kwargs = {k: v for k, v in node.connection_kwargs.items() if k in _NODE_SETTINGS}
    return aioredis.Redis(
        connection_pool=aioredis.ConnectionPool(connection_class=node.connection_class, **kwargs)
    )


def primary_names(cluster: aioredis.Redis) -> set[str]:
    """The masters of ``cluster`` as its client last learnt them ("host:port")."""
    return {node.name for node in cast(Any, cluster).get_primaries()}


def node_name(client: aioredis.Redis) -> str:
    """ "host:port" of a single-server client made by ``node_client``."""
    kwargs = client.connection_pool.connection_kwargs
    return f"{kwargs['host']}:{kwargs['port']}"


_NODE_SETTINGS = (
    "host",
    "port",
    "username",
    "password",
    "credential_provider",
    "client_name",
    "socket_timeout",
    "socket_connect_timeout",
    "health_check_interval",
    "ssl",
    "ssl_ca_certs",
    "ssl_certfile",
    "ssl_keyfile",
    "ssl_cert_reqs",
    "ssl_check_hostname",
)
"""What a node's single-server client takes over from the cluster client's settings for
that node (the rest, redis-py's own bookkeeping, differs between releases)."""


@contextmanager
def redis_errors(where: str, action: str) -> Iterator[None]:
    """Map redis-py's exceptions to asyncq's at the boundary; ``where`` is the redacted URL."""
    try:
        yield
    except (rx.ConnectionError, rx.TimeoutError, OSError) as exc:
        raise BrokerUnavailable(f"Redis at {where} unreachable {action}: {exc}") from exc
    except rx.RedisClusterException as exc:
        # Not a RedisError: the cluster client found no node that answers (redis-py 8
        # names it RedisClusterUnreachableError), or none that knows the slots.
        raise BrokerUnavailable(f"Redis Cluster at {where} unreachable {action}: {exc}") from exc
    except rx.RedisError as exc:
        raise BrokerError(f"Redis failed {action}: {exc}") from exc
