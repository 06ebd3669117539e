"""What asyncq declares on RabbitMQ, and how a delayed job finds its way back.

Per asyncq queue ``q`` (all names start with the ``prefix`` option):

* ``<prefix>.q``: the work queue workers consume from (durable, classic or quorum); a
  classic one has RabbitMQ's priorities (``x-max-priority`` 9, a job's priority in the
  message's ``priority`` property), so the broker hands out the highest first;
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

With a record store, the wait queues are shared by all queues of a prefix, and the records
count each queue's delayed jobs. Without one, each queue has wait queues of its own,
``<prefix>.q.wait.<ms>``, all declared with the queue, so that RabbitMQ's message counts
say how many of that queue's jobs wait.

Only the work queue has priorities: a message waits in the others for its time, not its
turn, and keeps its priority property through them.

A work queue declared before asyncq had priorities has no ``x-max-priority``, and a queue's
arguments cannot change once it exists: declaring it with them fails (PRECONDITION_FAILED).
Such a queue is then used as it is, with one warning; its jobs run in arrival order until it
is moved (the README's "Priorities" says how).

:class:`Topology` declares all this, once per process, and routes a job to where it goes
next.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from typing import Any, cast

import aio_pika
import aiormq
import anyio
from aio_pika.abc import AbstractRobustChannel

from .connection import Link

__all__ = [
    "BUCKETS_MS",
    "MAX_PRIORITY",
    "QUORUM_HAS_NO_PRIORITIES",
    "Names",
    "Topology",
    "next_wait",
    "queue_arguments",
]

log = logging.getLogger("asyncq.amqp")

MAX_PRIORITY = 9
"""A classic work queue's ``x-max-priority``: asyncq's priorities 0..9, one level each."""

QUORUM_HAS_NO_PRIORITIES = (
    "RabbitMQ's quorum queues (queue_type=quorum) have no priorities; use classic queues "
    "(queue_type=classic, the default) for jobs with priorities, or drop the priority"
)

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

    __slots__ = ("per_queue_waits", "prefix")

    def __init__(self, prefix: str, *, per_queue_waits: bool = False) -> None:
        self.prefix = prefix
        self.per_queue_waits = per_queue_waits

    def work(self, queue: str) -> str:
        return f"{self.prefix}.{queue}"

    def dead(self, queue: str) -> str:
        return f"{self.prefix}.{queue}.dead"

    def delayed(self, queue: str) -> str:
        return f"{self.prefix}.{queue}.delayed"

    def wait(self, ms: int, queue: str) -> str:
        """The wait queue (and its exchange) of ``ms`` for a job of ``queue``."""
        if self.per_queue_waits:
            return f"{self.prefix}.{queue}.wait.{ms}"
        return f"{self.prefix}.wait.{ms}"

    def waits(self, queue: str) -> list[str]:
        """``queue``'s own wait queues (none where the waits are shared)."""
        return [self.wait(ms, queue) for ms in BUCKETS_MS] if self.per_queue_waits else []


def queue_arguments(
    queue_type: str,
    *,
    max_length: int | None = None,
    ttl_ms: int | None = None,
    priorities: bool = False,
) -> dict[str, Any]:
    """The x-arguments of a durable queue of the configured type; ``priorities``: a work
    queue, with RabbitMQ's priorities where its type has them (classic)."""
    args: dict[str, Any] = {"x-queue-type": queue_type}
    if priorities and queue_type == "classic":
        args["x-max-priority"] = MAX_PRIORITY
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


class Topology:
    """Declares each queue's RabbitMQ queues and the waits (once per process), and routes
    a job to its next stop."""

    def __init__(self, link: Link, names: Names) -> None:
        self._link = link
        self.names = names
        self._settings = link.settings
        self.declared: set[str] = set()
        """asyncq queues whose RabbitMQ queues this process declared."""
        self._owner: dict[str, str] = {}
        """RabbitMQ queue name -> the asyncq queue it belongs to."""
        self._waits: set[str] = set()
        self._declaring = anyio.Lock()
        self.unordered: set[str] = set()
        """asyncq queues whose work queue exists without priorities (declared before asyncq
        had them): their jobs run in arrival order."""

    def declared_name(self, name: str) -> bool:
        """Whether this process declared the RabbitMQ queue ``name`` (so it exists)."""
        return name in self._owner

    def forget_queue(self, queue: str) -> None:
        """``queue``'s RabbitMQ queues were deleted: declare them again on the next use."""
        self.declared.discard(queue)
        for name in self._names_of(queue):
            self._owner.pop(name, None)
            self._waits.discard(name)

    def forget_name(self, name: str) -> None:
        """A publish to ``name`` found no queue (deleted under the running App)."""
        queue = self._owner.get(name)
        if queue is not None:
            self.forget_queue(queue)

    def _names_of(self, queue: str) -> list[str]:
        names = self.names
        return [names.work(queue), names.dead(queue), names.delayed(queue), *names.waits(queue)]

    async def declare(self, queues: Sequence[str]) -> None:
        """Declare the queues' work, dead-letter and delayed queues (and, where each queue
        has its own, its waits)."""
        if all(q in self.declared for q in queues):
            return
        s, names = self._settings, self.names
        async with self._declaring:
            for q in queues:
                if q in self.declared:
                    continue
                await self._declare_work_queue(q)
                channel = self._link.publisher
                plain = queue_arguments(s.queue_type)
                try:
                    await channel.declare_queue(names.dead(q), durable=True, arguments=plain)
                    await channel.declare_queue(names.delayed(q), durable=True, arguments=plain)
                    for ms in BUCKETS_MS if names.per_queue_waits else ():
                        await self._declare_wait_queue(names.wait(ms, q), ms)
                except aiormq.exceptions.ChannelPreconditionFailed:
                    await self._link.reopened(channel)
                    raise
                self.declared.add(q)
                for name in self._names_of(q):
                    self._owner[name] = q

    async def _declare_work_queue(self, queue: str) -> None:
        s, name = self._settings, self.names.work(queue)
        work = queue_arguments(s.queue_type, max_length=s.max_length, priorities=True)
        before = queue_arguments(s.queue_type, max_length=s.max_length)
        if work != before:
            # On a channel of its own: a queue from before priorities refuses the declaration
            # and RabbitMQ closes the channel, which must not be one publishes are in flight on.
            async with self._link.channel() as channel:
                try:
                    await channel.declare_queue(name, durable=True, arguments=work)
                    return
                except aiormq.exceptions.ChannelPreconditionFailed:
                    # aio-pika reopens it: wait, so that the block's end closes it for good.
                    await self._link.reopened(cast(AbstractRobustChannel, channel))
        # A quorum queue (no priorities to ask for), or one from before priorities: as it
        # was declared then, it is fine.
        channel = self._link.publisher
        try:
            await channel.declare_queue(name, durable=True, arguments=before)
        except aiormq.exceptions.ChannelPreconditionFailed:
            await self._link.reopened(channel)
            raise
        if work != before:
            self.unordered.add(queue)
            log.warning(
                "RabbitMQ queue %r has no priorities (it was declared without x-max-priority, "
                "before asyncq had them): it keeps working, but its jobs run in arrival order "
                "and their priorities are ignored until it is moved (see the README's "
                "'Priorities': a queue's arguments cannot change while it exists)",
                name,
            )

    async def declare_wait(self, ms: int, queue: str) -> str:
        """The wait of ``ms`` for jobs of ``queue``, declared; its name."""
        name = self.names.wait(ms, queue)
        if name in self._waits:
            return name
        async with self._declaring:
            if name not in self._waits:
                try:
                    await self._declare_wait_queue(name, ms)
                except aiormq.exceptions.ChannelPreconditionFailed:
                    await self._link.reopened(self._link.publisher)
                    raise
        return name

    async def _declare_wait_queue(self, name: str, ms: int) -> None:
        channel = self._link.publisher
        args = queue_arguments(self._settings.queue_type, ttl_ms=ms)
        exchange = await channel.declare_exchange(name, aio_pika.ExchangeType.FANOUT, durable=True)
        queue = await channel.declare_queue(name, durable=True, arguments=args)
        await queue.bind(exchange)
        self._waits.add(name)

    async def route(self, queue: str, eta: float | None) -> tuple[str, str]:
        """(exchange, routing key) for a job of ``queue`` due at ``eta``: its work queue
        if due, else the first wait of its delay."""
        work = self.names.work(queue)
        if eta is None:
            return "", work
        remaining = eta - time.time()
        if remaining <= 0:
            return "", work
        ms, last = next_wait(remaining)
        wait = await self.declare_wait(ms, queue)
        # A bounded work queue refuses what does not fit, and a message dead-lettered into
        # it would then be dropped, not refused: with max_length the last wait ends in
        # q.delayed too, whose mover publishes with a confirm and can wait and try again.
        if last and self._settings.max_length is None:
            return wait, work
        return wait, self.names.delayed(queue)
