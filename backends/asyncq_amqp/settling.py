"""Settling: what each outcome becomes on RabbitMQ and in the records.

A retry or dead letter is published (and confirmed) before the delivery is acknowledged,
so a crash in between duplicates a job at worst and never loses it. Acknowledgements go
out after that, as one ``multiple`` ack for each run of settled delivery tags (see
consumer.py). A released delivery is handed back unacknowledged, to the front of its
queue; with a record store its record says queued again, so its next delivery is not
taken for a lost worker's.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from asyncq.errors import BrokerError
from asyncq.settlement import Outcome, Settlement

from .connection import Link
from .consumer import Receipt, ack, requeue
from .dead_letters import DeadLetters
from .fastpath import Outgoing
from .publisher import Publisher, headers
from .topology import Topology

if TYPE_CHECKING:
    from .record_store import JobRecords

__all__ = ["Settler"]

log = logging.getLogger("asyncq.amqp")

_AGAIN = frozenset({Outcome.RETRY, Outcome.SNOOZE, Outcome.DEFER})
"""The outcomes that publish the job again, through its delay when it has one."""


class Settler:
    def __init__(
        self,
        link: Link,
        topology: Topology,
        publisher: Publisher,
        dead_letters: DeadLetters,
        records: JobRecords | None,
    ) -> None:
        self._link = link
        self._topology = topology
        self._publisher = publisher
        self._dead_letters = dead_letters
        self._records = records

    async def settle(self, settlements: Sequence[Settlement]) -> None:
        live: list[Settlement] = []
        stale: list[Settlement] = []
        for s in settlements:
            receipt: Receipt = s.delivery.receipt
            (stale if receipt.channel.is_closed else live).append(s)
        # A delivery whose channel closed is back in its queue and may run elsewhere: only
        # its success is worth recording (the copy will then be skipped).
        stale_done = [s for s in stale if s.outcome is Outcome.SUCCEEDED]
        with self._link.errors("settling jobs"):
            messages: list[Outgoing] = []
            owners: list[Settlement] = []
            for s in live:
                d = s.delivery
                if s.outcome in _AGAIN:
                    exchange, key = await self._topology.route(d.queue, s.eta)
                    # A snooze runs the same attempt again; a deferral the same message.
                    attempt = s.attempt + 1 if s.outcome is Outcome.RETRY else s.attempt
                    table = headers(attempt=attempt, eta=s.eta)
                    # At the job's priority, which the message it came in carried.
                    body = d.body if s.outcome is Outcome.DEFER else s.retry_body or b""
                    messages.append(Outgoing(exchange, key, body, d.id, table, d.priority))
                    owners.append(s)
                elif s.outcome is Outcome.DEAD:
                    messages.append(self._dead_letters.message(s))
                    owners.append(s)
            failures = await self._publisher.publish(messages)
        failed = {id(s) for s, f in zip(owners, failures, strict=True) if f is not None}
        if failed:
            log.error("RabbitMQ refused %d retry/snooze/dead-letter publish(es)", len(failed))
        recorded = [s for s in live if id(s) not in failed] + stale_done
        if recorded and self._records is not None:
            await self._records.settle(recorded)
        releases = [s.delivery.receipt for s in live if s.outcome is Outcome.RELEASE]
        acked = [
            s.delivery.receipt
            for s in live
            if id(s) not in failed and s.outcome is not Outcome.RELEASE
        ]
        ack(acked)
        if releases:
            requeue(releases)
        if failed:
            raise BrokerError(
                f"RabbitMQ refused {len(failed)} retry/snooze/dead-letter publish(es)"
            )
