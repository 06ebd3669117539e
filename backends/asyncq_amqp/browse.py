"""Reading a RabbitMQ queue from the front without taking anything out of it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiormq
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from .connection import Link

__all__ = ["browse"]


@asynccontextmanager
async def browse(link: Link, name: str) -> AsyncIterator[_Messages]:
    """The messages of queue ``name``, oldest first (none if it does not exist).

    Every message is fetched unacknowledged on a channel of its own and goes back, in its
    place, when the block ends and the channel closes (RabbitMQ then flags it
    redelivered); what the reader acknowledges is removed. While the block runs, the
    messages read are invisible to consumers, and a message of a TTL queue does not
    expire: keep the block short.
    """
    async with link.channel() as channel:
        yield _Messages(channel, name)


class _Messages:
    def __init__(self, channel: AbstractChannel, name: str) -> None:
        self._channel = channel
        self._name = name

    def __aiter__(self) -> _Messages:
        return self

    async def __anext__(self) -> AbstractIncomingMessage:
        try:
            queue = await self._channel.get_queue(self._name, ensure=False)
            message = await queue.get(no_ack=False, fail=False)
        except aiormq.exceptions.ChannelNotFoundEntity:
            raise StopAsyncIteration from None
        if message is None:
            raise StopAsyncIteration
        return message
