"""The Redis backend's settings, parsed once from the broker URL."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from asyncq.backend import parse_url_options, positive_float, positive_int, redact_url
from asyncq.errors import ConfigurationError

from .sentinel import SENTINEL_SCHEMES, sentinel_target

__all__ = ["RedisConnection", "RedisSettings"]

SOCKET_TIMEOUT = 5.0
"""Seconds a command waits for its reply, on every redis-py (8.x has 5 s of its own, earlier
releases wait forever): long enough for any command asyncq sends, short enough that a dead
connection is noticed and retried within seconds. A blocking read waits past it (see
blocking.py), as do pub/sub waits, which pass a timeout of their own."""
SOCKET_CONNECT_TIMEOUT = 5.0
RETRY_ON_TIMEOUT = True

MAX_TIMEOUT = 300.0
"""The largest socket timeout the URL takes. No command asyncq sends should take a second; a
reply later than five minutes is a server in trouble, and a longer timeout would only hide a
dead connection for longer. (The blocking fetch is not bounded by it: it waits for its block
plus the socket timeout.)"""


def _seconds(raw: str) -> float:
    value = positive_float(raw)
    if value > MAX_TIMEOUT:
        raise ValueError(f"must be at most {MAX_TIMEOUT:g} seconds")
    return value


def _boolean(raw: str) -> bool:
    lowered = raw.lower()
    if lowered not in ("true", "false"):
        raise ValueError("must be true or false")
    return lowered == "true"


def _prefix(raw: str) -> str:
    if not raw or any(c in raw for c in "{}: \t\n"):
        raise ValueError("must be non-empty, without braces, colons or spaces")
    return raw


def _replicas(raw: str) -> int:
    value = positive_int(raw)
    if value > MAX_WAIT_REPLICAS:
        raise ValueError(f"must be at most {MAX_WAIT_REPLICAS}")
    return value


MAX_WAIT_REPLICAS = 16
"""More replicas than any Redis deployment asyncq has seen: a larger number is a typo, and
an enqueue would wait out ``wait_timeout`` every time."""

_SCHEMES = ("redis", "rediss", *SENTINEL_SCHEMES)

_CONNECTION_OPTIONS: Mapping[str, Callable[[str], Any]] = {
    "socket_timeout": _seconds,
    "socket_connect_timeout": _seconds,
    "retry_on_timeout": _boolean,
    "cluster": _boolean,
}

_OPTIONS = {
    "prefix": _prefix,
    "visibility_timeout": positive_float,
    "result_ttl": positive_float,
    "max_connections": positive_int,
    "max_message_size": positive_int,
    "dead_ttl": positive_float,
    "dead_max": positive_int,
    "wait_replicas": _replicas,
    "wait_timeout": _seconds,
    **_CONNECTION_OPTIONS,
}


@dataclass(frozen=True, slots=True)
class RedisConnection:
    """How to reach Redis: the URL redis-py reads (host, port, db, user, password, TLS) and
    the client's timeouts, as ``open_client`` applies them."""

    url: str
    socket_timeout: float = SOCKET_TIMEOUT
    """Seconds a command waits for its reply before the connection counts as lost."""
    socket_connect_timeout: float = SOCKET_CONNECT_TIMEOUT
    """Seconds a new connection may take to open."""
    retry_on_timeout: bool = RETRY_ON_TIMEOUT
    """Whether a command that timed out is retried like one whose connection dropped."""
    cluster: bool = False
    """The URL names one node of a Redis Cluster, from which the client learns the rest."""

    @classmethod
    def from_url(cls, url: str) -> RedisConnection:
        """asyncq's connection options (``socket_timeout``, ``socket_connect_timeout``,
        ``retry_on_timeout``, ``cluster``) taken out of the URL's query; the rest of it is left for
        redis-py, as given (how a job record store's ``records=`` URL is read)."""
        parts = urlsplit(url)
        if parts.scheme not in _SCHEMES:
            raise ConfigurationError(f"not a Redis URL: {parts.scheme}://")
        if parts.scheme in SENTINEL_SCHEMES:
            sentinel_target(url)  # refused here if malformed, not at the first connect
        options: dict[str, Any] = {}
        rest = []
        for name, raw in parse_qsl(parts.query, keep_blank_values=True):
            convert = _CONNECTION_OPTIONS.get(name)
            if convert is None:
                rest.append((name, raw))
                continue
            try:
                options[name] = convert(raw)
            except ValueError as exc:
                raise ConfigurationError(
                    f"bad value {raw!r} for option {name!r} in Redis URL {redact_url(url)!r}: {exc}"
                ) from None
        return cls(urlunsplit(parts._replace(query=urlencode(rest))), **options)


@dataclass(frozen=True, slots=True)
class RedisSettings:
    """Options of ``redis://host:port/db?prefix=...&visibility_timeout=...``.

    ``connection_url`` is the URL without asyncq's own options, as redis-py reads it
    (host, port, db, user, password, TLS for ``rediss://``).
    """

    connection_url: str
    prefix: str = "asyncq"
    """Every key starts with it: several apps or test runs can share one Redis db."""
    visibility_timeout: float = 30.0
    """Seconds an unacknowledged job waits before another worker may take it; a live
    worker renews its jobs' claims three times per period."""
    result_ttl: float = 86400.0
    """Seconds finished jobs' records and results (and succeeded jobs' keys) are kept."""
    max_connections: int = 64
    """Size of the connection pool; a worker holds one per blocking fetch and watcher, and
    calls beyond the size wait for a free connection."""
    dead_ttl: float | None = None
    """Seconds a dead letter is kept; None: until replayed or purged."""
    dead_max: int | None = None
    """Dead letters kept per queue at most, the oldest removed first; None: no bound."""
    max_message_size: int | None = None
    """The largest job in bytes to send (a larger one raises ``MessageTooLarge`` at enqueue);
    at most, and by default, the server's ``proto-max-bulk-len`` (512 MiB unless set)."""
    socket_timeout: float = SOCKET_TIMEOUT
    """Seconds a command waits for its reply (at most 300). A worker's blocking fetch waits
    for its block plus this, so an idle fetch never times out."""
    socket_connect_timeout: float = SOCKET_CONNECT_TIMEOUT
    """Seconds a new connection may take to open (at most 300)."""
    retry_on_timeout: bool = RETRY_ON_TIMEOUT
    """Whether a command that timed out is retried (with backoff, about 1.5 s in all) like
    one whose connection dropped; false fails it at once."""
    cluster: bool = False
    """``?cluster=true``: the URL names one node of a Redis Cluster (any master or replica);
    the client learns the others from it and follows the slots as they move."""
    wait_replicas: int | None = None
    """An enqueue returns only once this many replicas have its jobs (Redis ``WAIT``), or
    raises ``BrokerUnavailable`` after ``wait_timeout``: replication is asynchronous, and
    without it a failover right after an enqueue can lose the jobs it confirmed."""
    wait_timeout: float = 1.0
    """Seconds an enqueue waits for ``wait_replicas`` replicas before it raises."""

    @classmethod
    def from_url(cls, url: str) -> RedisSettings:
        parts = urlsplit(url)
        if parts.scheme not in _SCHEMES:
            raise ConfigurationError(f"not a Redis URL: {parts.scheme}://")
        options = parse_url_options(url, _OPTIONS)
        if parts.scheme in SENTINEL_SCHEMES:
            sentinel_target(url)  # refused here if malformed, not at the first connect
            if options.get("cluster"):
                raise ConfigurationError(
                    f"a Sentinel URL cannot be a cluster too: {redact_url(url)!r}"
                )
            return cls(connection_url=urlunsplit(parts._replace(query="")), **options)
        path = parts.path.strip("/")
        if path and not path.isdigit():
            raise ConfigurationError(f"the Redis db in the URL must be a number, got {path!r}")
        if options.get("cluster") and path not in ("", "0"):
            # A cluster has one database, 0: SELECT is refused.
            raise ConfigurationError(
                f"a Redis Cluster has only db 0, got {path!r} in {redact_url(url)!r}"
            )
        if "wait_timeout" in options and "wait_replicas" not in options:
            raise ConfigurationError(
                f"wait_timeout without wait_replicas in Redis URL {redact_url(url)!r}"
            )
        return cls(connection_url=urlunsplit(parts._replace(query="")), **options)

    @property
    def connection(self) -> RedisConnection:
        return RedisConnection(
            self.connection_url,
            socket_timeout=self.socket_timeout,
            socket_connect_timeout=self.socket_connect_timeout,
            retry_on_timeout=self.retry_on_timeout,
            cluster=self.cluster,
        )
