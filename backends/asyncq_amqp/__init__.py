"""asyncq's AMQP 0-9-1 backend for RabbitMQ:
``asyncq.App("amqp://guest:guest@127.0.0.1:5672/%2F?records=redis://127.0.0.1:6379/0")``.

RabbitMQ carries the jobs. Job records (results, status, idempotency keys, cancellation,
worker heartbeats) live in Redis, named by the ``records`` option, because AMQP has no
store to look a job up in. Without ``records`` RabbitMQ works alone: enqueue, delivery,
retries, delays, dead letters, purges, shutdown, tracing and metrics; what needs records
raises ``ConfigurationError`` saying to add it (see :class:`AmqpBackend`).

Several hosts, the nodes of a cluster, go comma-separated where one would, sharing the
credentials, vhost and options: ``amqp://guest:guest@10.0.0.1:5672,10.0.0.2:5672,
10.0.0.3:5672/%2F?queue_type=quorum&records=...`` (each host ``NAME`` or ``NAME:PORT``,
IPv6 in brackets). Every connect and reconnect (the publishing connection and a worker's
consume connection alike) tries them in turn, starting after the one that answered last
(a random one at first), until one answers; a connect fails with ``BrokerUnavailable`` only
when none did. A publish a quorum queue refuses (as while it elects a leader) goes again on
a new channel until it is taken, or ``publish_timeout`` runs out (``BrokerUnavailable``).
An empty host, a bad port or a host named twice is a ``ConfigurationError``.

URL options (query string): ``records`` (a Redis URL), ``prefix`` (default ``asyncq``),
``queue_type`` (``classic`` or ``quorum``), ``result_ttl`` (seconds, default 86400),
``max_length`` (bound each work queue; a publish beyond it fails with ``QueueFull``),
``publish_timeout`` (seconds, default 30), ``consumer_timeout`` (seconds RabbitMQ lets a
delivery stay unacknowledged, default 1800: asyncq asks for it per consumer and stops jobs
before it, see consumer_timeout.py); for the connection, ``heartbeat`` (seconds, default
60; 0 turns heartbeats off), ``channel_max`` (default: the broker's),
``connection_attempts`` (tries of the first connect, default 1) and ``retry_delay``
(seconds between them, default 2). Needs RabbitMQ 3.10 or newer and
``pip install 'asyncq[amqp]'``.
"""

from .backend import AmqpBackend, QueueFull
from .settings import AmqpSettings

__all__ = ["AmqpBackend", "AmqpSettings", "QueueFull"]
