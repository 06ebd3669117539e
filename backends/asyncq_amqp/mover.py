"""The delayed-job mover, a worker's upkeep: each message in ``<queue>.delayed`` goes on to
the next wait of its delay, or to the work queue once due (see topology.py)."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import aio_pika
import aiormq
import anyio
from aio_pika.abc import AbstractIncomingMessage

from asyncq.errors import BrokerError

from .connection import Link
from .fastpath import Outgoing
from .publisher import Publisher
from .topology import Topology, queue_arguments

__all__ = ["DelayMover"]

log = logging.getLogger("asyncq.amqp")

_RETRY_WAIT_MS = 1024  # how long a delayed job refused by a full work queue waits to retry


class DelayMover:
    def __init__(self, link: Link, topology: Topology, publisher: Publisher) -> None:
        self._link = link
        self._topology = topology
        self._publisher = publisher
        self.moving: Counter[str] = Counter()
        """Per queue, the delayed jobs this process is moving: taken off ``q.delayed`` and
        not yet acknowledged, so RabbitMQ counts them nowhere."""

    async def run(self, queues: Sequence[str]) -> None:
        """Move the queues' delayed jobs until cancelled."""
        link, names = self._link, self._topology.names
        with link.errors("declaring queues"):
            await self._topology.declare(queues)
            channel = await link.connection.channel(publisher_confirms=False)
        under_way = _InFlight()
        consumers: list[tuple[aio_pika.abc.AbstractQueue, str]] = []
        try:
            await channel.set_qos(prefetch_count=100)
            for q in queues:
                queue = await channel.declare_queue(
                    names.delayed(q),
                    durable=True,
                    arguments=queue_arguments(link.settings.queue_type),
                )
                consumers.append((queue, await queue.consume(self._make_hop(q, under_way))))
            await anyio.sleep_forever()
        finally:
            with anyio.CancelScope(shield=True):
                # Take no more, and let the moves under way finish: a move cut off between
                # its publish and its ack would move the job twice.
                if not channel.is_closed:
                    for consumer, tag in consumers:
                        try:
                            await consumer.cancel(tag)
                        except aiormq.exceptions.ChannelInvalidStateError:
                            # A cancelled RPC (a stop while a basic.consume was under way)
                            # closes the channel, and its consumers go with it.
                            break
                with anyio.move_on_after(5):
                    await under_way.idle()
                if not channel.is_closed:
                    await channel.close()

    def _make_hop(
        self, queue: str, under_way: _InFlight
    ) -> Callable[[AbstractIncomingMessage], Any]:
        async def hop(message: AbstractIncomingMessage) -> None:
            self.moving[queue] += 1
            try:
                with under_way:
                    await self._move(queue, message)
            finally:
                self.moving[queue] -= 1

        return hop

    async def _move(self, queue: str, message: AbstractIncomingMessage) -> None:
        topology, publish = self._topology, self._publisher.publish
        headers = dict(message.headers or {})
        raw_eta = headers.get("x-eta-ms")
        eta = raw_eta / 1000 if isinstance(raw_eta, int) else None
        headers.pop("x-death", None)  # RabbitMQ's record of the waits so far
        job_id = message.message_id or ""
        priority = message.priority or 0  # kept through every wait, as the job's own
        try:
            with self._link.errors("moving a delayed job"):
                exchange, key = await topology.route(queue, eta)
                moved = Outgoing(exchange, key, message.body, job_id, headers or None, priority)
                (failure,) = await publish([moved])
                if failure is not None:
                    # Refused (its work queue is full): it waits a second and comes back
                    # here to try again.
                    log.warning("delayed job %s waits: %s", job_id, failure)
                    wait = await topology.declare_wait(_RETRY_WAIT_MS, queue)
                    back = topology.names.delayed(queue)
                    again = Outgoing(wait, back, message.body, job_id, moved.headers, priority)
                    (failure,) = await publish([again])
                if failure is not None:
                    raise failure
                await message.ack()
        except (BrokerError, aiormq.exceptions.AMQPError) as exc:
            log.warning("moving delayed job %s failed, will retry in 1 s: %s", job_id, exc)
            await anyio.sleep(1.0)  # back off from a broker that refuses everything
            if not message.channel.is_closed:
                await message.nack(requeue=True)


class _InFlight:
    """Counts the moves under way, so a shutdown can wait for them."""

    def __init__(self) -> None:
        self._count = 0
        self._idle = anyio.Event()
        self._idle.set()

    def __enter__(self) -> None:
        if not self._count:
            self._idle = anyio.Event()
        self._count += 1

    def __exit__(self, *exc: object) -> None:
        self._count -= 1
        if not self._count:
            self._idle.set()

    async def idle(self) -> None:
        await self._idle.wait()
