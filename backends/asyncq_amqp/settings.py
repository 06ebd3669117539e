"""The AMQP backend's settings, parsed once from the broker URL."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, NamedTuple
from urllib.parse import urlsplit, urlunsplit

from asyncq.backend import parse_url_options, positive_float, positive_int, redact_url
from asyncq.errors import ConfigurationError

__all__ = ["RECORDS_HINT", "AmqpSettings", "Host"]

_PORTS = {"amqp": 5672, "amqps": 5671}


class Host(NamedTuple):
    """One node a broker URL names."""

    name: str
    port: int

    def __str__(self) -> str:
        return f"[{self.name}]:{self.port}" if ":" in self.name else f"{self.name}:{self.port}"


def _hosts(url: str) -> tuple[Host, ...]:
    """The nodes of ``amqp://user:pass@host1:5672,host2:5672/vhost``, in the URL's order:
    one host, or several separated by commas (each with its port, or the scheme's)."""
    parts = urlsplit(url)
    default = _PORTS.get(parts.scheme, 5672)
    listed = parts.netloc.rpartition("@")[2]
    if not listed:
        return (Host("localhost", default),)  # as aio-pika reads amqp:///vhost
    found: list[Host] = []
    for entry in listed.split(","):
        where = f"in broker URL {redact_url(url)!r}"
        if not entry:
            raise ConfigurationError(
                f"empty host {where}: separate several hosts with single commas, e.g. "
                "amqp://guest:guest@10.0.0.1:5672,10.0.0.2:5672/%2F"
            )
        one = urlsplit(f"//{entry}")
        try:
            port = default if one.port is None else one.port
            if port == 0:
                raise ValueError("port 0")
        except ValueError:
            raise ConfigurationError(
                f"bad port in host {entry!r} {where}: each host is NAME or NAME:PORT "
                "(PORT from 1 to 65535; an IPv6 address in brackets, [::1]:5672)"
            ) from None
        if not one.hostname:
            raise ConfigurationError(f"host {entry!r} {where} has no name")
        host = Host(one.hostname, port)
        if host in found:
            raise ConfigurationError(f"host {host} named twice {where}")
        found.append(host)
    return tuple(found)


def _name(raw: str) -> str:
    if not raw or any(c.isspace() for c in raw) or len(raw) > 100:
        raise ValueError("must be 1-100 characters without spaces")
    return raw


def _queue_type(raw: str) -> str:
    if raw not in ("classic", "quorum"):
        raise ValueError("must be 'classic' or 'quorum'")
    return raw


def _bounded_int(low: int, high: int, why: str = "") -> Callable[[str], int]:
    def parse(raw: str) -> int:
        message = f"must be an integer from {low} to {high}{why}"
        try:
            value = int(raw)
        except ValueError:
            raise ValueError(message) from None
        if not low <= value <= high:
            raise ValueError(message)
        return value

    return parse


def _bounded_float(low: float, high: float) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        message = f"must be a number of seconds from {low:g} to {high:g}"
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(message) from None
        if not low <= value <= high:  # also refuses nan
            raise ValueError(message)
        return value

    return parse


def _records_url(raw: str) -> str:
    if urlsplit(raw).scheme not in ("redis", "rediss", "postgresql", "postgres"):
        raise ValueError(
            "must be a redis:// or postgresql:// URL, e.g. redis://127.0.0.1:6379/0 or "
            "postgresql://app@db:5432/shop?schema=asyncq (URL-encoded when it has options)"
        )
    return raw


_OPTIONS = {
    "records": _records_url,
    "prefix": _name,
    "queue_type": _queue_type,
    "result_ttl": positive_float,
    "max_length": positive_int,
    "dead_ttl": positive_float,
    "dead_max": positive_int,
    "publish_timeout": positive_float,
    # AMQP carries both in 16 bits; aiormq reads 65535 seconds as "no heartbeat".
    "heartbeat": _bounded_int(0, 65534, " (seconds; 0 turns heartbeats off)"),
    # asyncq keeps three channels open per connection (publishing, consuming, upkeep)
    # and opens one more for each stats or dead-letter call while it runs.
    "channel_max": _bounded_int(8, 65535, " (asyncq needs a few channels per connection)"),
    # RabbitMQ takes milliseconds; below a second, no job would have time to finish.
    "consumer_timeout": _bounded_float(1.0, 30 * 86400.0),
    # RabbitMQ's own ceiling for max_message_size is 512 MiB.
    "max_message_size": _bounded_int(1, 512 * 1024 * 1024, " (bytes)"),
    "connection_attempts": _bounded_int(1, 1000),
    "retry_delay": _bounded_float(0.0, 3600.0),
}

RECORDS_HINT = (
    "RabbitMQ keeps no job records, so the amqp:// backend keeps them in Redis or "
    "PostgreSQL: add records=redis://HOST:6379/DB (or records=postgresql://...) to the "
    "broker URL, e.g. 'amqp://guest:guest@127.0.0.1:5672/%2F?records=redis://127.0.0.1:6379/0'"
)
"""What to do when a feature needs the record store and the URL names none."""


@dataclass(frozen=True, slots=True)
class AmqpSettings:
    """Options of ``amqp://user:pass@host:5672/vhost?records=redis://...&queue_type=...``.

    ``connection_url`` is the URL without asyncq's options; it may name several hosts,
    comma-separated (the nodes of a cluster), which :attr:`hosts` lists and
    :meth:`url_for` turns into a URL of one, as aio-pika and the consume connection read it.
    """

    connection_url: str
    hosts: tuple[Host, ...] = field(init=False)
    """The nodes ``connection_url`` names: a connect tries them in turn (connection.py)."""
    records: str | None = None
    """Where job records live: a Redis URL. None: RabbitMQ alone, without what needs
    records (see the package docstring)."""
    prefix: str = "asyncq"
    """Every queue and exchange name starts with it (and every Redis key with
    ``<prefix>:amqp``), so several apps can share one vhost."""
    queue_type: Literal["classic", "quorum"] = "classic"
    """``quorum``: Raft-replicated queues that survive the loss of a node."""
    result_ttl: float = 86400.0
    """Seconds finished jobs' records and results (and succeeded jobs' keys) are kept."""
    max_length: int | None = None
    """Bound each work queue: publishes beyond it are refused (``QueueFull``)."""
    dead_ttl: float | None = None
    """Seconds a dead letter is kept; None: until replayed or purged."""
    dead_max: int | None = None
    """Dead letters kept per queue at most, the oldest removed first; None: no bound."""
    publish_timeout: float = 30.0
    """Seconds an enqueue waits for the broker's confirm (or for a lost connection to
    come back) before it fails with ``BrokerUnavailable``."""

    consumer_timeout: float = 1800.0
    """Seconds RabbitMQ lets a delivery stay unacknowledged before it takes it back from
    its consumer, however alive (its ``consumer_timeout``; 30 minutes by default). asyncq
    asks for it per consumer (RabbitMQ 3.11.15 and later; older ones apply only their
    rabbitmq.conf, which this must then match) and stops jobs before it."""
    heartbeat: int = 60
    """Seconds between AMQP heartbeats; either side closes a connection that stays silent
    for about three of them. 0 turns them off."""
    channel_max: int | None = None
    """The most channels this client opens on a connection (at most the broker's own
    limit); None takes the broker's."""
    max_message_size: int | None = None
    """The largest job, in bytes, RabbitMQ accepts (its ``max_message_size``); a larger one
    is refused at enqueue before anything is published. None: RabbitMQ's default for the
    server's version (128 MiB before 4.0, 16 MiB since); give it when the broker's
    setting differs."""
    connection_attempts: int = 1
    """How many times the first connect is tried before it fails (a lost connection is
    retried without end, see the package docstring)."""
    retry_delay: float = 2.0
    """Seconds between two of those attempts."""

    def __post_init__(self) -> None:
        # Derived, never given: one source (the URL), checked however the settings are made.
        object.__setattr__(self, "hosts", _hosts(self.connection_url))

    def url_for(self, host: Host) -> str:
        """``connection_url`` naming only ``host``: credentials, vhost and options kept."""
        parts = urlsplit(self.connection_url)
        user, at, _ = parts.netloc.rpartition("@")
        return urlunsplit(parts._replace(netloc=f"{user}{at}{host}"))

    @classmethod
    def from_url(cls, url: str) -> AmqpSettings:
        parts = urlsplit(url)
        if parts.scheme not in ("amqp", "amqps"):
            raise ConfigurationError(f"not an AMQP URL: {parts.scheme}://")
        options = parse_url_options(url, _OPTIONS)
        return cls(connection_url=urlunsplit(parts._replace(query="")), **options)
