"""What asyncq declares on RabbitMQ, and how a delayed job finds its way back.

Per asyncq queue ``q`` (all names start with the ``prefix`` option):

* ``<prefix>.q``: the work queue workers consume from (durable, classic or quorum);
* ``<prefix>.q.dead``: its dead-letter queue; each message carries the error's type,
  message and traceback in its headers;
* ``<prefix>.q.delayed``: delayed jobs between two waits (see below).

Delays need no plugin. A fixed set of wait queues ``<prefix>.wait.<ms>``, one per power of
two from 16 ms to about 18.6 hours, each hold messages for exactly their TTL and then
dead-letter them (default exchange, the message's own routing key) to where they were sent
for. Because every message in a wait queue has the same TTL, they expire in arrival order,
so a short delay never waits behind a long one. Each wait queue is fed by a fanout
exchange of the same name, which lets the routing key name the destination.

A delay is served as a series of waits, the longest that does not overshoot first
(a 5 s delay waits 4.096 s, then 0.512 s, ...). Between two waits the job passes through
``q.delayed``, where a worker's upkeep loop picks the next wait; the last wait ends in the
work queue itself. A delay shorter than the shortest wait is rounded up to it, so a job
never runs early and at most 16 ms late, plus a millisecond or so per wait.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["BUCKETS_MS", "Names", "next_wait", "queue_arguments"]

BUCKETS_MS = tuple(2**k for k in range(4, 27))
"""The wait queues' TTLs in milliseconds: 16 ms ... 67,108,864 ms (18.6 h)."""


def next_wait(remaining: float) -> tuple[int, bool]:
    """The wait for a job due in ``remaining`` seconds: (TTL in ms, whether it is the last).

    The longest wait that does not overshoot; below the shortest, the shortest (a few ms
    late rather than early).
    """
    ms = remaining * 1000.0
    if ms <= BUCKETS_MS[0]:
        return BUCKETS_MS[0], True
    k = min(int(math.log2(ms)), 26)
    bucket = 2**k
    return bucket, ms - bucket < 1.0  # within a millisecond: this wait is the last


class Names:
    """The names of one prefix's queues and exchanges."""

    __slots__ = ("prefix",)

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def work(self, queue: str) -> str:
        return f"{self.prefix}.{queue}"

    def dead(self, queue: str) -> str:
        return f"{self.prefix}.{queue}.dead"

    def delayed(self, queue: str) -> str:
        return f"{self.prefix}.{queue}.delayed"

    def wait(self, ms: int) -> str:
        return f"{self.prefix}.wait.{ms}"


def queue_arguments(
    queue_type: str, *, max_length: int | None = None, ttl_ms: int | None = None
) -> dict[str, Any]:
    """The x-arguments of a durable queue of the configured type."""
    args: dict[str, Any] = {"x-queue-type": queue_type}
    if max_length is not None:
        args["x-max-length"] = max_length
        args["x-overflow"] = "reject-publish"
    if ttl_ms is not None:
        args["x-message-ttl"] = ttl_ms
        args["x-dead-letter-exchange"] = ""  # back by the message's own routing key
        if queue_type == "quorum":
            # Quorum queues drop expired messages unless told to dead-letter them safely,
            # which in turn needs publishes refused (not old messages dropped) when full.
            args["x-dead-letter-strategy"] = "at-least-once"
            args["x-overflow"] = "reject-publish"
    return args
