"""Reading a RabbitMQ queue from the front without taking anything out of it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiormq
import anyio
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from .connection import Link

__all__ = ["browse"]

_RETURN_WAIT = 2.0
"""Seconds a browse of a queue without consumers waits for its messages to be counted again."""


@asynccontextmanager
async def browse(link: Link, name: str, *, until_counted: bool = False) -> AsyncIterator[_Messages]:
    """The messages of queue ``name``, oldest first (none if it does not exist).

    Every message is fetched unacknowledged on a channel of its own and goes back, in its
    place, when the block ends and the channel closes (RabbitMQ then flags it
    redelivered); what the reader acknowledges is removed. While the block runs, the
    messages read are invisible to consumers, and a message of a TTL queue does not
    expire: keep the block short.

    A quorum queue takes the messages back after the channel's close returns (a command
    of its Raft log): until then its count leaves them out. ``until_counted``, for a queue
    nobody consumes from (a dead-letter queue), waits up to 2 s until the count has them
    again, so that what is read right after (``queue_stats``) agrees with the browse.
    """
    async with link.channel() as channel:
        messages = _Messages(channel, name)
        yield messages
    held = sum(1 for message in messages.read if not message.processed)
    if until_counted and held:
        # The last fetch said how many were left behind it: the count is those and these.
        behind = messages.read[-1].message_count or 0
        await _until_counted(link, name, held + behind)


async def _until_counted(link: Link, name: str, expected: int) -> None:
    with anyio.move_on_after(_RETURN_WAIT):
        async with link.channel() as channel:
            while True:
                try:
                    queue = await channel.declare_queue(name, passive=True)
                except aiormq.exceptions.ChannelNotFoundEntity:
                    return  # deleted meanwhile: nothing to wait for
                if (queue.declaration_result.message_count or 0) >= expected:
                    return
                await anyio.sleep(0.01)  # the count of a Raft log's apply: nothing to wait on


class _Messages:
    def __init__(self, channel: AbstractChannel, name: str) -> None:
        self._channel = channel
        self._name = name
        self.read: list[AbstractIncomingMessage] = []

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
        self.read.append(message)
        return message
