"""Publishing with confirms: a batch of messages goes out in one write (fastpath.py) and
waits for all its confirms at once; each refusal is reported per message, in asyncq's
words.

The headers asyncq's messages carry are written here too: ``x-attempt`` (the attempt a
message is for, when not the first) and ``x-eta-ms`` (when a delayed job is due).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from typing import Any, cast

import aiormq
import anyio
from aiormq.abc import DeliveredMessage
from pamqp import commands as spec
from pamqp.common import FieldTable

from asyncq.errors import BrokerError, BrokerUnavailable

from . import fastpath
from .connection import Link
from .errors import QueueFull
from .fastpath import Outgoing
from .topology import Topology

__all__ = ["Publisher", "headers"]


def headers(
    *, attempt: int = 1, eta: float | None = None, extra: FieldTable | None = None
) -> FieldTable | None:
    """The headers of a job's message for ``attempt``, due at ``eta``."""
    table: FieldTable = dict(extra) if extra else {}
    if attempt != 1:
        table["x-attempt"] = attempt
    if eta is not None:
        # Whole milliseconds: AMQP tables may carry floats as single precision, far too
        # coarse for an epoch time.
        table["x-eta-ms"] = math.ceil(eta * 1000)
    return table or None


_FIRST_PAUSE = 0.1
_LONGEST_PAUSE = 1.0
"""Seconds between two tries of a publish a quorum queue refused: doubling from the first
to the longest."""


class Publisher:
    """Publishes on the link's channel in confirm mode."""

    def __init__(self, link: Link, topology: Topology) -> None:
        self._link = link
        self._topology = topology
        settings = link.settings
        # Without a bound of asyncq's, a quorum queue refuses (basic.nack) only what it
        # cannot take now, as while it elects a leader: worth another try. With one, a
        # refusal says the queue is full.
        self._retry_refusals = settings.queue_type == "quorum" and settings.max_length is None

    async def publish(self, messages: Sequence[Outgoing]) -> list[BaseException | None]:
        """Publish and wait for every confirm at once; per message, None or why it failed.
        What a quorum queue refused goes again on a new channel, until it is taken or
        ``publish_timeout`` is near (:meth:`_pause`).

        A failure of the channel itself (closed by the broker, a lost connection) raises
        the driver's exception, for the caller's ``Link.errors`` to map."""
        if not messages:
            return []
        link = self._link
        replies: list[Any] = [None] * len(messages)
        todo = list(range(len(messages)))
        pause = _FIRST_PAUSE
        with anyio.fail_after(link.settings.publish_timeout) as scope:
            while True:
                channel = cast(aiormq.Channel, await link.publisher.get_underlay_channel())
                confirms = await fastpath.publish(channel, [messages[i] for i in todo])
                answers = await asyncio.gather(*confirms, return_exceptions=True)
                for answer in answers:
                    # A nack (DeliveryError) refuses one message and is reported per
                    # message. Any other failure is the channel's and fails the whole
                    # publish, raised for the caller's mapping to turn into asyncq's own
                    # error; returned per message, it would escape the mapping.
                    if isinstance(answer, Exception) and not isinstance(
                        answer, aiormq.exceptions.DeliveryError
                    ):
                        if isinstance(answer, aiormq.exceptions.AMQPChannelError):
                            await link.reopened(link.publisher)  # the connection is fine
                        raise answer
                for i, answer in zip(todo, answers, strict=True):
                    replies[i] = answer
                if not self._retry_refusals:
                    break
                todo = [
                    i
                    for i, answer in zip(todo, answers, strict=True)
                    if isinstance(answer, aiormq.exceptions.DeliveryError)
                ]
                if not todo or anyio.current_time() + pause >= scope.deadline:
                    break
                await self._pause(channel, pause)
                pause = min(2 * pause, _LONGEST_PAUSE)
        return [self._refusal(r) for r in replies]

    async def _pause(self, refusing: aiormq.Channel, seconds: float) -> None:
        """Wait ``seconds`` before the next try, having put a new publishing channel in
        place of ``refusing``.

        A channel's first publish to a quorum queue asks the node the queue's metadata
        names as its leader; should that node be down, RabbitMQ (3.10) refuses the publish
        and asks that same node again on the channel's next one, and the next: the channel
        refuses every publish to the queue for good, although the queue has a new leader
        seconds later. A new channel asks anew. A timer, because nothing tells a client
        that a queue has a leader again."""
        began = anyio.current_time()
        replaced = await self._link.renew_publisher(refusing)
        if replaced is not None:
            # Other publishes wait on the old channel, which refuses them too: let their
            # answers come, for them to try again, before closing it (which would fail them
            # as the channel's own failure).
            waiting = [f for f in refusing.confirmations.values() if not f.done()]
            with anyio.move_on_after(seconds):
                if waiting:
                    await asyncio.wait(waiting)
            with anyio.move_on_after(seconds, shield=True):
                await replaced.close()
        await anyio.sleep(max(0.0, began + seconds - anyio.current_time()))

    def _refusal(self, reply: Any) -> BaseException | None:
        if reply is None or isinstance(reply, spec.Basic.Ack):
            return None
        if isinstance(reply, DeliveredMessage):  # returned: no queue took it
            key = reply.routing_key or ""
            # Someone deleted the queue under the running App: declare it on the next use.
            self._topology.forget_name(key)
            return BrokerError(
                f"RabbitMQ had no queue for the job (routing key {key!r}; deleted while the "
                "App ran?); it is declared again on the next enqueue"
            )
        if isinstance(reply, aiormq.exceptions.DeliveryError):
            settings = self._link.settings
            if self._retry_refusals:
                return BrokerUnavailable(
                    "RabbitMQ refused the job (basic.nack) again and again for "
                    f"publish_timeout={settings.publish_timeout:g} s: its quorum queue "
                    "could not take it, as while no node of the cluster leads it; enqueue "
                    "it again"
                )
            limit = settings.max_length
            bound = f" (max_length={limit})" if limit else ""
            return QueueFull(f"RabbitMQ refused the job: its queue is full{bound}")
        if isinstance(reply, BaseException):
            return reply
        return BrokerError(f"RabbitMQ did not confirm a publish: {reply!r}")
