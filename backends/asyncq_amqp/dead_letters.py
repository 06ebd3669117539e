"""Dead letters: the message a dead job becomes, and reading and purging the dead-letter
queue. The headers are written and read here only:

``x-task``, ``x-error-type``, ``x-error-message``, ``x-error-traceback`` (why it died),
``x-died-ms`` (when, epoch milliseconds), ``x-attempt`` (the attempt that died, when not
the first) and ``x-cursor`` (its place in the queue, for paging: the time it died in
nanoseconds, then its id).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import aiormq
import anyio
from aio_pika.abc import AbstractIncomingMessage
from pamqp.common import FieldTable

from asyncq.errors import ErrorInfo
from asyncq.records import DeadLetter, TrimmedDeadLetters
from asyncq.settlement import Settlement

from .browse import browse
from .connection import Link
from .fastpath import Outgoing
from .publisher import headers
from .topology import Names

__all__ = ["DeadLetters"]


class DeadLetters:
    """The dead-letter queue of each queue, ``<prefix>.<queue>.dead``."""

    def __init__(self, link: Link, names: Names) -> None:
        self._link = link
        self._names = names

    def message(self, s: Settlement) -> Outgoing:
        """The dead letter of a DEAD settlement."""
        d, error = s.delivery, s.error or ErrorInfo("Unknown", "")
        now = time.time()
        extra: FieldTable = {
            "x-task": s.task,
            "x-error-type": error.type,
            "x-error-message": error.message,
            "x-error-traceback": error.traceback,
            "x-died-ms": round(now * 1000),
            "x-cursor": f"{time.time_ns():020d}-{d.id}",
        }
        table = headers(attempt=d.receipt.attempt, extra=extra)
        return Outgoing("", self._names.dead(d.queue), d.body, d.id, table)

    async def page(
        self, queue: str, *, limit: int = 100, after: str | None = None
    ) -> list[DeadLetter]:
        found: list[DeadLetter] = []
        with self._link.errors("listing dead letters"):
            async with browse(self._link, self._names.dead(queue), until_counted=True) as messages:
                async for message in messages:
                    letter = read(queue, message)
                    if after is None or letter.cursor > after:
                        found.append(letter)
                        if len(found) >= limit:
                            break
        return found

    async def purge(self, queue: str, ids: Sequence[str] | None = None) -> int:
        name = self._names.dead(queue)
        with self._link.errors("purging dead letters"):
            if ids is None:
                async with self._link.channel() as channel:
                    try:
                        dead = await channel.declare_queue(name, passive=True)
                    except aiormq.exceptions.ChannelNotFoundEntity:
                        return 0
                    ok = await dead.purge()
                    return int(ok.message_count or 0)
            wanted, count = set(ids), 0
            async with browse(self._link, name, until_counted=True) as messages:
                async for message in messages:
                    if message.message_id in wanted:
                        wanted.discard(message.message_id)  # the oldest entry of each job only
                        await message.ack()
                        count += 1
                        if not wanted:
                            break
            return count

    async def trim(self, queue: str, ttl: float | None, most: int | None) -> TrimmedDeadLetters:
        """Remove ``queue``'s dead letters that died over ``ttl`` seconds ago (by the
        ``x-died-ms`` of the worker that wrote each: clocks of other hosts count), then the
        oldest beyond ``most``. A dead-letter queue is in the order its letters died, so
        both take from its front, in one pass (:meth:`_take_front`).

        Counting and then removing is two steps: two workers doing both at once would each
        remove the excess. So a removal beyond ``most`` runs under a lock: an exclusive
        queue, which one connection at a time can declare (the others get RESOURCE_LOCKED
        and skip this round). It is deleted after, and RabbitMQ deletes it with its
        connection should the trimmer die first."""
        name = self._names.dead(queue)
        if ttl is None and most is None:
            return TrimmedDeadLetters(queue, 0, 0)
        with self._link.errors("trimming dead letters"):
            ready = await self._ready(name)
            if most is None or ready <= most:
                # The usual case: no lock needed, as nothing goes beyond the bound.
                expired, _ = await self._take_front(name, ttl, None, ready)
                return TrimmedDeadLetters(queue, expired, 0)
            lock = f"{name}.trim-lock"
            async with self._link.channel() as channel:
                try:
                    await channel.declare_queue(lock, exclusive=True)
                except aiormq.exceptions.ChannelLockedResource:
                    return TrimmedDeadLetters(queue, 0, 0)  # another worker is trimming it
                try:
                    ready = await self._ready(name)  # again: under the lock
                    expired, beyond = await self._take_front(name, ttl, most, ready)
                finally:
                    with anyio.CancelScope(shield=True):
                        await channel.queue_delete(lock)
        return TrimmedDeadLetters(queue, expired, beyond)

    async def _take_front(
        self, name: str, ttl: float | None, most: int | None, ready: int
    ) -> tuple[int, int]:
        """Remove from the front of dead-letter queue ``name`` (``ready`` letters long) the
        letters older than ``ttl`` seconds, then those beyond ``most``; how many of each.

        One pass on one channel: a letter read and not removed goes back to the queue only
        as the channel closes, later, and at the back of a quorum queue's returned
        messages, so a second pass could miss it, or take a younger letter in its stead.
        Here the pass reads a letter it keeps only to learn that it is within ``ttl``, and
        then stops."""
        cutoff_ms = None if ttl is None else (time.time() - ttl) * 1000
        expired = beyond = 0
        async with browse(self._link, name, until_counted=True) as messages:
            while True:
                over = most is not None and ready - expired - beyond > most
                if cutoff_ms is None and not over:
                    break  # what is left is within both bounds: read no further
                message = await anext(messages, None)
                if message is None:
                    break
                if cutoff_ms is not None and _died_ms(message) < cutoff_ms:
                    await message.ack()
                    expired += 1
                    continue
                cutoff_ms = None  # every letter behind this one died after it
                if not over:
                    break  # kept: it goes back when the block ends
                await message.ack()
                beyond += 1
        return expired, beyond

    async def _ready(self, name: str) -> int:
        """Ready messages in queue ``name``; 0 if it does not exist."""
        async with self._link.channel() as channel:
            try:
                queue = await channel.declare_queue(name, passive=True)
            except aiormq.exceptions.ChannelNotFoundEntity:
                return 0
            return int(queue.declaration_result.message_count or 0)


def _died_ms(message: AbstractIncomingMessage) -> float:
    died = (message.headers or {}).get("x-died-ms")
    return float(died) if isinstance(died, int | float) else 0.0  # unknown: the oldest


def read(queue: str, message: AbstractIncomingMessage) -> DeadLetter:
    """The dead letter a message of ``queue``'s dead-letter queue is."""
    table = message.headers or {}

    def text(name: str) -> str:
        value = table.get(name)
        return value.decode() if isinstance(value, bytes) else str(value or "")

    died = table.get("x-died-ms")
    return DeadLetter(
        id=message.message_id or "",
        queue=queue,
        body=message.body,
        error=ErrorInfo(
            text("x-error-type") or "Unknown",
            text("x-error-message"),
            text("x-error-traceback"),
        ),
        died_at=died / 1000 if isinstance(died, int) else 0.0,
        task=text("x-task"),
        cursor=text("x-cursor"),
    )


def attempt(message: AbstractIncomingMessage) -> int:
    """The attempt a message (a job's or a dead letter) is for."""
    value = (message.headers or {}).get("x-attempt", 1)
    return value if isinstance(value, int) else 1
