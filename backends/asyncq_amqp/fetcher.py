"""Fetching: the consume connection (receiver.py), its current
:class:`~.consumer.Consumer`, and the admission of what it delivers.

One connection per process consumes, on one channel with a ``basic.qos`` prefetch equal to
the worker's slots, so RabbitMQ never hands a worker more unacknowledged jobs than it can
hold. It is opened by the first fetch.
Deliveries wait in the consumer's buffer until a fetch takes them; a fetch admits what is
buffered in one step and hands over as many as the worker has slots for.

Admission runs with a record store: one Redis round trip marks the jobs running and drops
copies of jobs that already ended (an ack lost with a connection) and stale copies of a
retried attempt (records.py, START). Without a store every delivery runs, and
``redelivered`` is RabbitMQ's own flag: set on any delivery that went out before, to a
lost worker or handed back at a shutdown alike.

After a lost connection (or a channel RabbitMQ closed, as over a consumer timeout), the
next fetch opens a new connection (to the next host that answers, when the URL names
several), and a new consumer takes the old one's queues (the old
one's deliveries went back to their queues with its connection); while RabbitMQ is away
that fetch fails with ``BrokerUnavailable`` and the worker tries again. After
:meth:`Fetcher.stop` the next fetch starts a new consumer on the same connection.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Container, Sequence
from typing import TYPE_CHECKING

import anyio

from asyncq.delivery import Delivery
from asyncq.errors import BrokerError, BrokerUnavailable
from asyncq.settlement import Settlement

from .connection import Link, Rotation, connection_name
from .consumer import Acks, Consumer, Receipt, ack
from .consumer_timeout import timed_out
from .receiver import Incoming, Receiver
from .records import Admission
from .topology import Topology

if TYPE_CHECKING:
    from .record_store import JobRecords

__all__ = ["Fetcher"]

log = logging.getLogger("asyncq.amqp")

Settle = Callable[[Sequence[Settlement]], Awaitable[None]]


class Fetcher:
    """The backend's ``fetch``, and what it has handed to the worker."""

    def __init__(
        self,
        link: Link,
        topology: Topology,
        records: JobRecords | None,
        cancelled: Container[str],
        settle: Settle,
    ) -> None:
        self._link = link
        self._topology = topology
        self._records = records
        self._cancelled = cancelled
        self._settle = settle
        self._receiver: Receiver | None = None
        self._hosts = Rotation(link.settings.hosts)
        self._opening = asyncio.Lock()
        self._consumer: Consumer | None = None
        self._acks: Acks | None = None
        self._prefetch = 0
        self.running: Counter[str] = Counter()
        """Per queue, deliveries handed to this process's worker and not yet settled."""

    def buffered(self, *, admitted: bool) -> Counter[str]:
        """Per queue, deliveries this process holds that no worker has taken: waiting for
        admission, and (with ``admitted``) admitted."""
        consumer = self._consumer
        found: Counter[str] = Counter(q for q, _ in consumer.buffer) if consumer else Counter()
        if consumer is not None and admitted:
            found.update(d.queue for d in consumer.admitted)
        return found

    async def fetch(
        self, queues: Sequence[str], limit: int, timeout: float | None
    ) -> list[Delivery]:
        with self._link.errors("starting to consume"):
            await self._consume(queues, limit)
        deadline = None if timeout is None else anyio.current_time() + timeout
        while True:
            consumer = self._consumer
            if consumer is None or consumer.stopped:
                return []
            if consumer.admitted:
                return await self._hand_over(consumer, limit)
            if not consumer.buffer:
                if deadline is not None and anyio.current_time() >= deadline:
                    return []
                consumer.arrived.clear()
                with anyio.move_on_after(
                    None if deadline is None else deadline - anyio.current_time()
                ):
                    # Set once per socket read, with everything that read brought buffered.
                    await consumer.arrived.wait()
                continue
            # Everything buffered is admitted together, one round trip however few slots
            # are free now: the rest waits, admitted, for the next fetches. What arrives
            # meanwhile joins. Admitted deliveries are this worker's: a cancellation must
            # not drop them.
            with anyio.CancelScope(shield=True):
                while consumer.buffer and len(consumer.admitted) < limit:
                    consumer.admitted.extend(await self._admit(consumer))
            if consumer.admitted:
                return await self._hand_over(consumer, limit)

    async def _hand_over(self, consumer: Consumer, limit: int) -> list[Delivery]:
        """Up to ``limit`` admitted deliveries; one cancelled since its admission is settled
        cancelled here instead of being run."""
        out: list[Delivery] = []
        cancelled: list[Settlement] = []
        while consumer.admitted and len(out) < limit:
            delivery = consumer.admitted.popleft()
            receipt: Receipt = delivery.receipt
            if delivery.id in self._cancelled:
                cancelled.append(Settlement.cancelled(delivery, task="", attempt=receipt.attempt))
            else:
                receipt.running = True
                self.running[delivery.queue] += 1
                out.append(delivery)
        if cancelled:
            with anyio.CancelScope(shield=True):
                await self._settle(cancelled)
        return out

    def settled(self, settlements: Sequence[Settlement]) -> None:
        for s in settlements:
            receipt: Receipt = s.delivery.receipt
            if receipt.running:
                receipt.running = False
                self.running[s.delivery.queue] -= 1

    async def _admit(self, consumer: Consumer) -> list[Delivery]:
        taken = consumer.take()
        deliveries = consumer.deliveries(taken)
        if self._records is None:
            return deliveries
        # Grouped by queue (START runs per queue); the verdicts come back in this order.
        by_queue: dict[str, list[Delivery]] = {}
        for d in deliveries:
            by_queue.setdefault(d.queue, []).append(d)
        batches = [
            (q, [(d.id, d.receipt.attempt, d.redelivered) for d in ds])
            for q, ds in by_queue.items()
        ]
        try:
            verdicts = await self._records.start(batches)
        except BrokerError:
            # Not admitted: give them back so nothing sits unseen in this worker's buffer.
            consumer.untake(taken)
            raise
        admitted, skipped = [], []
        grouped = (d for ds in by_queue.values() for d in ds)
        for verdict, d in zip(verdicts, grouped, strict=True):
            if verdict == Admission.SKIP:
                skipped.append(d.receipt)
            else:
                d.redelivered = verdict == Admission.RUN_REDELIVERED
                admitted.append(d)
        if skipped:
            ack(skipped)
        return admitted

    async def _consume(self, queues: Sequence[str], limit: int) -> None:
        receiver = self._receiver
        if receiver is None or receiver.is_closed:
            async with self._opening:  # workers sharing this backend fetch concurrently
                receiver = self._receiver
                if receiver is None or receiver.is_closed:
                    receiver = await self._open_receiver()
        consumer = self._consumer
        if consumer is None or consumer.channel is not receiver:
            acks, names = self._acks_of(receiver), self._topology.names
            lost, consumer = consumer, Consumer(acks, names, self._link.settings)
            # The new consumer takes over before it starts, so a fetch meanwhile waits on
            # it (and starts none of its own).
            self._consumer = consumer
            if lost is not None:  # its connection was lost: it takes the lost one's queues
                lost.stopped = True
                lost.arrived.set()
                await self._release(lost.admitted)
                queues = [*lost.queues, *(q for q in queues if q not in lost.queues)]
                log.info("consuming again from %s after a reconnect", ",".join(lost.queues))
        if limit > self._prefetch:
            # The first fetch asks for every slot: that is the window RabbitMQ may fill.
            self._prefetch = limit
            await receiver.qos(limit)
        new = [q for q in queues if q not in consumer.queues]
        if new:
            await self._topology.declare(new)
            if self._records is not None:
                await self._records.register(new)
            for q in new:
                if q not in consumer.queues:  # a concurrent fetch may have started it
                    await consumer.start(q)

    async def _open_receiver(self) -> Receiver:
        """A consume connection to the first host of a round that answers (connection.py)."""
        settings, rotation = self._link.settings, self._hosts
        failures: list[BrokerUnavailable] = []
        for host in rotation.round():
            receiver = Receiver(
                settings.url_for(host),
                name=connection_name(settings, "consuming"),
                heartbeat=settings.heartbeat,
                channel_max=settings.channel_max,
                on_delivery=self._delivered,
                on_close=self._receiver_closed,
            )
            try:
                # A refusal (BrokerError) is raised at once: the nodes of a cluster share
                # their users and vhosts, so every other one would refuse too.
                await receiver.open(rotation.timeout)
            except BrokerUnavailable as exc:
                failures.append(exc)
                continue
            rotation.answered(host)
            self._receiver, self._prefetch = receiver, 0
            return receiver
        if len(failures) == 1:
            raise failures[0]
        raise BrokerUnavailable(
            f"no host of RabbitMQ at {self._link.where} answered consuming: "
            + "; ".join(str(f) for f in failures)
        ) from failures[-1]

    def _acks_of(self, receiver: Receiver) -> Acks:
        if self._acks is None or self._acks.channel is not receiver:
            self._acks = Acks(receiver)
        return self._acks

    def _delivered(self, message: Incoming) -> None:
        consumer = self._consumer
        if consumer is not None and message.consumer_tag in consumer.tags:
            consumer.delivered(message)
        elif self._receiver is not None:
            # For a consumer stopped or replaced meanwhile: back to the front of its queue.
            self._receiver.nack(message.delivery_tag, requeue=True)

    def _receiver_closed(self, receiver: Receiver, why: BaseException) -> None:
        if receiver is not self._receiver:
            return  # one that never opened, or was replaced
        timed_out(why, self._link.settings, self._link.version())
        consumer = self._consumer
        if consumer is not None and consumer.channel is receiver:
            # Its deliveries are back in their queues; a fetch waiting on it returns, and
            # the next one connects again.
            consumer.stopped = True
            consumer.arrived.set()
            log.warning("the consume connection closed: %s", why)

    async def stop(self) -> None:
        """Take no more deliveries and hand back what no worker has taken; the next fetch
        starts a new consumer."""
        consumer, self._consumer = self._consumer, None
        if consumer is None:
            return
        with self._link.errors("stopping consumers"):
            await consumer.cancel()
        await self._release(consumer.hand_back())

    async def close(self) -> None:
        """Close the consume connection: what the consumer holds goes back with it."""
        consumer, self._consumer = self._consumer, None
        receiver, self._receiver = self._receiver, None
        self._acks, self._prefetch = None, 0
        self.running.clear()
        if consumer is not None:
            consumer.stopped = True
            consumer.arrived.set()
        if receiver is not None:
            await receiver.close()
        if consumer is not None:
            await self._release(consumer.admitted)

    async def _release(self, admitted: Sequence[Delivery]) -> None:
        """Admitted deliveries no worker took: their records go back to queued (their
        messages are handed back, or go back when the channel closes)."""
        if self._records is None or not admitted:
            return
        releases = [Settlement.release(d, attempt=d.receipt.attempt) for d in admitted]
        try:
            await self._records.settle(releases)
        except BrokerError as exc:
            log.warning("could not return %d unstarted job(s): %s", len(admitted), exc)
