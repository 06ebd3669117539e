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

from asyncq.errors import BrokerError

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


class Publisher:
    """Publishes on the link's channel in confirm mode."""

    def __init__(self, link: Link, topology: Topology) -> None:
        self._link = link
        self._topology = topology

    async def publish(self, messages: Sequence[Outgoing]) -> list[BaseException | None]:
        """Publish and wait for every confirm at once; per message, None or why it failed.

        A failure of the channel itself (closed by the broker, a lost connection) raises
        the driver's exception, for the caller's ``Link.errors`` to map."""
        if not messages:
            return []
        link = self._link
        with anyio.fail_after(link.settings.publish_timeout):
            channel = cast(aiormq.Channel, await link.publisher.get_underlay_channel())
            confirms = await fastpath.publish(channel, messages)
            replies = await asyncio.gather(*confirms, return_exceptions=True)
        for reply in replies:
            # A nack (DeliveryError) refuses one message and is reported per message. Any
            # other failure is the channel's and fails the whole publish, raised for the
            # caller's mapping to turn into asyncq's own error; returned per message, it
            # would escape the mapping.
            if isinstance(reply, Exception) and not isinstance(
                reply, aiormq.exceptions.DeliveryError
            ):
                if isinstance(reply, aiormq.exceptions.AMQPChannelError):
                    await link.reopened(link.publisher)  # the connection is fine
                raise reply
        return [self._refusal(r) for r in replies]

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
            limit = self._link.settings.max_length
            bound = f" (max_length={limit})" if limit else ""
            return QueueFull(f"RabbitMQ refused the job: its queue is full{bound}")
        if isinstance(reply, BaseException):
            return reply
        return BrokerError(f"RabbitMQ did not confirm a publish: {reply!r}")
