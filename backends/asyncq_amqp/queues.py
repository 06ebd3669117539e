"""Operations on whole queues: their depths, and purging and removing them.

RabbitMQ counts each queue's ready messages (a passive ``queue.declare`` answers with the
count); what else a queue holds is counted where it is known:

* with a record store, its ``scheduled`` and ``running`` sets (records.py) count the
  delayed and running jobs;
* without one, a queue's delayed jobs are the messages in its own wait queues and in
  ``q.delayed`` (see topology.py), and those this process's mover holds between two waits;
  its running jobs are those this process's worker runs. AMQP does not say how many
  unacknowledged messages other consumers hold: another process's running jobs, and the
  delayed jobs its mover holds for a moment, are not counted.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING

import aio_pika
import aiormq
from aio_pika.abc import AbstractIncomingMessage

from asyncq.records import QueueStats

from .browse import browse
from .connection import Link
from .fetcher import Fetcher
from .mover import DelayMover
from .topology import Topology

if TYPE_CHECKING:
    from .record_store import JobRecords

__all__ = ["Queues"]

_ACKS_PER_READ = 16
"""Acknowledgements a purge sends before it reads on. A quorum queue gives each basic.get
delivery a consumer of its own, so every ack (a ``multiple`` one too) is a settle command
of its own; a channel sends 32 (RabbitMQ's SOFT_LIMIT) before it waits for the queue to
apply them, and holds back the rest, which a close of the channel then drops: their
messages return to the queue, to be read (and counted) again. The next basic.get goes
through the queue's log behind the settles sent before it, so no more than this many are
ever outstanding, and none is held back when the channel closes."""


class Queues:
    def __init__(
        self,
        link: Link,
        topology: Topology,
        records: JobRecords | None,
        fetcher: Fetcher,
        mover: DelayMover,
    ) -> None:
        self._link = link
        self._topology = topology
        self._records = records
        self._fetcher = fetcher
        self._mover = mover

    async def known(self) -> list[str]:
        """The queues the records know of; without records, those this process declared."""
        if self._records is None:
            return sorted(self._topology.declared)
        return await self._records.queues()

    def _waiting(self, queue: str) -> list[str]:
        """The RabbitMQ queues whose messages are ``queue``'s delayed jobs, where they can
        be counted (without records)."""
        names = self._topology.names
        return [names.delayed(queue), *names.waits(queue)]

    async def stats(self, queues: Sequence[str] | None) -> list[QueueStats]:
        if queues is None:
            queues = await self.known()
        names = self._topology.names
        records = self._records
        per_queue = [
            [names.work(q), names.dead(q), *(self._waiting(q) if records is None else ())]
            for q in queues
        ]
        with self._link.errors("reading queue depths"):
            if records is not None:
                counts, depths = await asyncio.gather(
                    records.counts(queues), self.depths([n for ns in per_queue for n in ns])
                )
            else:
                depths = await self.depths([n for ns in per_queue for n in ns])
        # RabbitMQ counts only ready messages; those delivered to this process and not yet
        # taken by its worker are pending too. (Another process holds such messages only
        # briefly: its prefetch window never exceeds its free slots.) With records, an
        # admitted delivery is counted running already.
        buffered = self._fetcher.buffered(admitted=records is None)
        out, at = [], 0
        for i, (q, ns) in enumerate(zip(queues, per_queue, strict=True)):
            work, dead, *waiting = depths[at : at + len(ns)]
            at += len(ns)
            deferred = 0
            if records is not None:
                scheduled, running, deferred = counts[i]
            else:
                scheduled = sum(waiting) + self._mover.moving[q]
                running = self._fetcher.running[q]
            pending = work + buffered[q] + deferred
            out.append(QueueStats(q, pending, scheduled - deferred, running, dead))
        return out

    async def depths(self, names: Sequence[str]) -> list[int]:
        """Ready messages per RabbitMQ queue, 0 for a queue that does not exist."""
        out: list[int] = [0] * len(names)
        known = [i for i, name in enumerate(names) if self._topology.declared_name(name)]
        if known:
            # Declared by this process, so they exist: ask on the publishing channel, all at
            # once.
            publisher = await self._link.publisher.get_underlay_channel()
            replies = await asyncio.gather(
                *(publisher.queue_declare(names[i], passive=True) for i in known)
            )
            for i, ok in zip(known, replies, strict=True):
                out[i] = ok.message_count or 0
        spare: aio_pika.abc.AbstractChannel | None = None
        try:
            for i, name in enumerate(names):
                if self._topology.declared_name(name):
                    continue
                # Perhaps missing, and a passive declare of a missing queue closes its
                # channel: ask on a channel of its own.
                if spare is None or spare.is_closed:
                    spare = await self._link.connection.channel(publisher_confirms=False)
                try:
                    queue = await spare.declare_queue(name, passive=True)
                except aiormq.exceptions.ChannelNotFoundEntity:
                    continue
                out[i] = queue.declaration_result.message_count or 0
        finally:
            if spare is not None and not spare.is_closed:
                await spare.close()
        return out

    async def purge(self, queue: str, *, limit: int) -> int:
        # Ready messages are taken off the work queue (those a worker holds are running
        # and stay), a few at a time. With records, their records are cancelled and then
        # they are acknowledged: a crash in between leaves a cancelled job's message, which
        # admission drops. Without records they are simply acknowledged, and the queue's
        # delayed jobs go with its wait queues' purge.
        purged = 0
        with self._link.errors("purging a queue"):
            async with browse(self._link, self._topology.names.work(queue)) as messages:
                while purged < limit:
                    taken: list[AbstractIncomingMessage] = []
                    async for message in messages:
                        taken.append(message)
                        if len(taken) >= min(_ACKS_PER_READ, limit - purged):
                            break
                    if not taken:
                        break
                    if self._records is not None:
                        ids = [m.message_id or "" for m in taken]
                        await self._records.purge(queue, ids, 0)
                    for message in taken:
                        await message.ack()
                    purged += len(taken)
            if self._records is not None and purged < limit:
                purged += await self._records.purge(queue, [], limit - purged)
            if self._records is None and purged < limit:
                purged += await self._purge_all(self._waiting(queue))
        return purged

    async def _purge_all(self, names: Sequence[str]) -> int:
        purged = 0
        for name in names:
            async with self._link.channel() as channel:
                try:
                    found = await channel.declare_queue(name, passive=True)
                except aiormq.exceptions.ChannelNotFoundEntity:
                    continue
                ok = await found.purge()
                purged += int(ok.message_count or 0)
        return purged

    async def remove(self, queue: str) -> None:
        names = self._topology.names
        waits = names.waits(queue)
        with self._link.errors("removing a queue"):
            async with self._link.channel() as channel:
                for name in (names.work(queue), names.dead(queue), names.delayed(queue), *waits):
                    await channel.queue_delete(name)
                for name in waits:
                    await channel.exchange_delete(name)
        self._topology.forget_queue(queue)
        if self._records is not None:
            await self._records.unregister(queue)
