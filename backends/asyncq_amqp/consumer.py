"""One consume connection's deliveries (receiver.py): a :class:`Consumer` lives from its
first ``basic.consume`` until its connection is lost or consuming stops, and is then
replaced by a new one, never reset. What it holds goes with it: the consumer tags, the deliveries
waiting for a fetch, the ones admitted and not yet handed to the worker.

Acknowledgements belong to the connection's channel, not to a consumer (delivery tags
count per channel, and a ``multiple`` ack covers every earlier tag): consumers of one
receiver share its :class:`Acks`, and each delivery's :class:`Receipt` acknowledges
through it, so a job that outlives its consumer (still running when a stop replaced it)
is acknowledged as usual.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import deque
from collections.abc import Sequence

from asyncq.delivery import Delivery
from asyncq.errors import BrokerError

from .consumer_timeout import consume_arguments
from .receiver import Incoming, Receiver
from .settings import AmqpSettings
from .topology import Names

__all__ = ["Acks", "Consumer", "Receipt", "ack", "requeue"]

log = logging.getLogger("asyncq.amqp")


class Acks:
    """Unacknowledged delivery tags of one receiver, in delivery order.

    Settled tags at the front are acknowledged together with one ``multiple`` ack; a tag
    settled behind an unsettled one is acknowledged on its own, so a long job never holds
    back the acks (and so the prefetch window) of the quick ones after it.
    """

    __slots__ = ("channel", "settled")

    def __init__(self, channel: Receiver) -> None:
        self.channel = channel
        self.settled: dict[int, bool] = {}

    def delivered(self, tag: int) -> None:
        self.settled[tag] = False

    def ack(self, tags: Sequence[int]) -> list[tuple[int, bool]]:
        """Mark ``tags`` settled; return the (tag, multiple) acks to send."""
        settled = self.settled
        for tag in tags:
            if tag in settled:
                settled[tag] = True
        front = 0
        for tag, done in settled.items():
            if not done:
                break
            front = tag
        acks: list[tuple[int, bool]] = []
        if front:
            for tag in [t for t in settled if t <= front]:
                del settled[tag]
            acks.append((front, True))
        for tag in tags:
            if settled.pop(tag, False):
                acks.append((tag, False))
        return acks


class Receipt:
    """Where a delivery came from, to acknowledge it on the same channel."""

    __slots__ = ("acks", "attempt", "running", "tag")

    def __init__(self, acks: Acks, tag: int, attempt: int) -> None:
        self.acks = acks
        self.tag = tag
        self.attempt = attempt
        self.running = False
        """Handed to the worker and not yet settled."""

    @property
    def channel(self) -> Receiver:
        return self.acks.channel


def ack(receipts: Sequence[Receipt]) -> None:
    """Acknowledge settled deliveries (see :class:`Acks`), in one write per receiver; those
    of a closed one are back in their queue already and need none."""
    by_channel: dict[Acks, list[int]] = {}
    for r in receipts:
        tags = by_channel.get(r.acks)
        if tags is None:
            tags = by_channel[r.acks] = []
        tags.append(r.tag)
    for acks, tags in by_channel.items():
        if acks.channel.is_closed:
            continue
        for tag, multiple in acks.ack(tags):
            acks.channel.ack(tag, multiple=multiple)


def requeue(receipts: Sequence[Receipt]) -> None:
    """Give deliveries back to their queue, unacknowledged and unchanged, at its front."""
    for r in receipts:
        if r.channel.is_closed:
            continue
        r.acks.settled.pop(r.tag, None)
        r.channel.nack(r.tag, requeue=True)


class Consumer:
    """The consumers of one receiver, one per queue, and what they delivered."""

    def __init__(self, acks: Acks, names: Names, settings: AmqpSettings) -> None:
        self.channel = acks.channel
        self.acks = acks
        self._names = names
        self._settings = settings
        self.tags: dict[str, str] = {}
        """consumer tag -> the asyncq queue it consumes."""
        self.queues: list[str] = []
        self.buffer: deque[tuple[str, Incoming]] = deque()
        """Delivered, waiting for a fetch to admit them."""
        self.admitted: deque[Delivery] = deque()
        """Admitted, waiting for a fetch with free slots."""
        self.arrived = asyncio.Event()
        self.stopped = False

    async def start(self, queue: str) -> None:
        # Known before the first delivery, which may be handled before ConsumeOk is.
        tag = f"asyncq.{queue}.{os.urandom(6).hex()}"
        self.tags[tag] = queue
        self.queues.append(queue)
        await self.channel.consume(self._names.work(queue), tag, consume_arguments(self._settings))

    def delivered(self, message: Incoming) -> None:
        self.acks.delivered(message.delivery_tag)
        self.buffer.append((self.tags[message.consumer_tag], message))
        self.arrived.set()

    def take(self) -> list[tuple[str, Incoming]]:
        """Everything buffered, in delivery order."""
        taken = list(self.buffer)
        self.buffer.clear()
        return taken

    def untake(self, taken: Sequence[tuple[str, Incoming]]) -> None:
        """Put deliveries taken and not admitted back in front, in their order."""
        self.buffer.extendleft(reversed(taken))

    def deliveries(self, taken: Sequence[tuple[str, Incoming]]) -> list[Delivery]:
        out = []
        acks = self.acks
        for q, message in taken:
            attempt = message.headers.get("x-attempt", 1) if message.headers else 1
            tag = message.delivery_tag
            receipt = Receipt(acks, tag, attempt if isinstance(attempt, int) else 1)
            job_id = message.message_id or f"amqp-{q}-{tag}"
            out.append(
                Delivery(job_id, q, message.body, receipt, message.redelivered, message.priority)
            )
        return out

    async def cancel(self) -> None:
        """Stop RabbitMQ's deliveries to these consumers (they stay this channel's until
        acknowledged or handed back)."""
        self.stopped = True
        self.arrived.set()  # a fetch waiting on this consumer looks again
        if self.channel.is_closed:
            return
        for tag in list(self.tags):
            try:
                await self.channel.cancel(tag)
            except BrokerError as exc:
                log.debug("could not cancel consumer %s: %s", tag, exc)

    def hand_back(self) -> list[Delivery]:
        """Give every delivery no worker took back to its queue; return the admitted ones
        (their records say running, until the caller says otherwise)."""
        admitted = list(self.admitted)
        self.admitted.clear()
        receipts: list[Receipt] = [d.receipt for d in admitted]
        receipts += [d.receipt for d in self.deliveries(self.take())]
        requeue(receipts)
        return admitted
