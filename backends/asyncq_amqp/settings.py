"""The AMQP backend's settings, parsed once from the broker URL."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from asyncq.backend import parse_url_options, positive_float, positive_int, redact_url
from asyncq.errors import ConfigurationError

__all__ = ["AmqpSettings"]


def _name(raw: str) -> str:
    if not raw or any(c.isspace() for c in raw) or len(raw) > 100:
        raise ValueError("must be 1-100 characters without spaces")
    return raw


def _queue_type(raw: str) -> str:
    if raw not in ("classic", "quorum"):
        raise ValueError("must be 'classic' or 'quorum'")
    return raw


def _records_url(raw: str) -> str:
    if urlsplit(raw).scheme not in ("redis", "rediss"):
        raise ValueError("must be a redis:// or rediss:// URL, e.g. redis://127.0.0.1:6379/0")
    return raw


_OPTIONS = {
    "records": _records_url,
    "prefix": _name,
    "queue_type": _queue_type,
    "result_ttl": positive_float,
    "max_length": positive_int,
    "publish_timeout": positive_float,
}

_NEEDS_RECORDS = (
    "the amqp:// backend keeps job records (results, status, idempotency keys, "
    "cancellation, worker heartbeats) in Redis, because AMQP has no key-value store: add "
    "records=redis://HOST:6379/DB to the broker URL, e.g. "
    "'amqp://guest:guest@127.0.0.1:5672/%2F?records=redis://127.0.0.1:6379/0'"
)


@dataclass(frozen=True, slots=True)
class AmqpSettings:
    """Options of ``amqp://user:pass@host:5672/vhost?records=redis://...&queue_type=...``.

    ``connection_url`` is the URL without asyncq's options, as aio-pika reads it.
    """

    connection_url: str
    records: str
    """Where job records live: a Redis URL (required; see the package docstring)."""
    prefix: str = "asyncq"
    """Every queue and exchange name starts with it (and every Redis key with
    ``<prefix>:amqp``), so several apps can share one vhost."""
    queue_type: Literal["classic", "quorum"] = "classic"
    """``quorum``: Raft-replicated queues that survive the loss of a node."""
    result_ttl: float = 86400.0
    """Seconds finished jobs' records and results (and succeeded jobs' keys) are kept."""
    max_length: int | None = None
    """Bound each work queue: publishes beyond it are refused (``QueueFull``)."""
    publish_timeout: float = 30.0
    """Seconds an enqueue waits for the broker's confirm (or for a lost connection to
    come back) before it fails with ``BrokerUnavailable``."""

    @classmethod
    def from_url(cls, url: str) -> AmqpSettings:
        parts = urlsplit(url)
        if parts.scheme not in ("amqp", "amqps"):
            raise ConfigurationError(f"not an AMQP URL: {parts.scheme}://")
        options = parse_url_options(url, _OPTIONS)
        if "records" not in options:
            raise ConfigurationError(f"{_NEEDS_RECORDS} (got {redact_url(url)!r})")
        return cls(connection_url=urlunsplit(parts._replace(query="")), **options)
