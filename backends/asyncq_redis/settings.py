"""The Redis backend's settings, parsed once from the broker URL, and its key layout."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from asyncq.backend import parse_url_options, positive_float, positive_int
from asyncq.errors import ConfigurationError

__all__ = ["QueueKeys", "RedisSettings"]


def _prefix(raw: str) -> str:
    if not raw or any(c in raw for c in "{}: \t\n"):
        raise ValueError("must be non-empty, without braces, colons or spaces")
    return raw


_OPTIONS = {
    "prefix": _prefix,
    "visibility_timeout": positive_float,
    "result_ttl": positive_float,
    "max_connections": positive_int,
}


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

    @classmethod
    def from_url(cls, url: str) -> RedisSettings:
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss"):
            raise ConfigurationError(f"not a Redis URL: {parts.scheme}://")
        options = parse_url_options(url, _OPTIONS)
        path = parts.path.strip("/")
        if path and not path.isdigit():
            raise ConfigurationError(f"the Redis db in the URL must be a number, got {path!r}")
        return cls(connection_url=urlunsplit(parts._replace(query="")), **options)


class QueueKeys:
    """The keys of one queue, all under one hash tag so the queue lives in one cluster slot."""

    __slots__ = ("base", "dead", "done_prefix", "scheduled", "stream", "wake")

    def __init__(self, prefix: str, queue: str) -> None:
        self.base = f"{prefix}:{{{queue}}}"
        self.stream = f"{self.base}:stream"
        self.scheduled = f"{self.base}:scheduled"
        self.dead = f"{self.base}:dead"
        self.wake = f"{self.base}:wake"
        self.done_prefix = f"{self.base}:done:"

    def job(self, job_id: str) -> str:
        return f"{self.base}:job:{job_id}"
