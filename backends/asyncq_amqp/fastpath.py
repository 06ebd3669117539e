"""Where asyncq goes past aio-pika to aiormq itself, for speed: publishing a batch with
one write. (Receiving goes past aiormq altogether: receiver.py.)

aiormq's ``basic_publish`` costs a coroutine, a lock round, three pamqp frame
objects and their generic marshalling per message; with confirms, a batch needs a task
per message on top to wait for them together. asyncq's messages all have the same few
properties (content type, optional headers, persistent delivery mode, a priority above 0,
message id), so
their frames are encoded here directly, the whole batch goes to aiormq's writer as one
buffer, and the confirm of each message is a future in aiormq's own table, which aiormq
resolves (Ack) or fails (Nack, a closed channel) as usual. The frame layout is AMQP
0-9-1's (section 4.2.3); tests/amqp_backend/test_publisher.py checks the bytes against pamqp's
encoder.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Sequence
from functools import lru_cache, partial
from typing import NamedTuple

import aiormq
from aiormq.abc import ChannelFrame
from pamqp import commands as spec
from pamqp import encode
from pamqp import frame as pamqp_frame
from pamqp.common import FieldTable

__all__ = ["Outgoing", "encode_message", "publish"]

_FRAME = struct.Struct(">BHI")  # type, channel, payload size
_HEADER_HEAD = struct.Struct(">HHQH")  # class id, weight, body size, property flags
_END = b"\xce"
_HEADER_FRAME, _BODY_FRAME = 2, 3
_PERSISTENT = b"\x02"

# Property flags of Basic (AMQP 0-9-1, 4.2.6.1): one bit per property present.
_CONTENT_TYPE, _HEADERS, _DELIVERY_MODE, _PRIORITY = 1 << 15, 1 << 13, 1 << 12, 1 << 11
_MESSAGE_ID = 1 << 7
_PRIORITIES = tuple(bytes((p,)) for p in range(256))  # one octet each, made once
_CONTENT_TYPE_VALUE = encode.short_string("application/json")


class Outgoing(NamedTuple):
    """One message to publish: where to, its body, its job id, its headers and its job's
    priority (the AMQP property; 0 is left out, which a queue reads as 0)."""

    exchange: str
    routing_key: str
    body: bytes
    message_id: str
    headers: FieldTable | None = None
    priority: int = 0


@lru_cache(maxsize=4096)
def _method_frame(channel: int, exchange: str, routing_key: str) -> bytes:
    # The same for every message to one destination, so it is encoded once.
    # Mandatory: a message no queue takes (its queue was deleted) comes back as a return
    # instead of vanishing, and its publish fails.
    method = spec.Basic.Publish(exchange=exchange, routing_key=routing_key, mandatory=True)
    return pamqp_frame.marshal(method, channel)


def encode_message(channel: int, message: Outgoing, max_body_frame: int) -> bytes:
    """The method, header and body frames of one persistent publish."""
    body = message.body
    flags = _CONTENT_TYPE | _DELIVERY_MODE | _MESSAGE_ID
    table = priority = b""
    if message.headers:
        flags |= _HEADERS
        table = encode.field_table(message.headers)
    if message.priority:
        flags |= _PRIORITY
        priority = _PRIORITIES[message.priority]
    # The properties in the order of their flags: content type, headers, delivery mode,
    # priority, message id.
    properties = (
        _HEADER_HEAD.pack(spec.Basic.frame_id, 0, len(body), flags)
        + _CONTENT_TYPE_VALUE
        + table
        + _PERSISTENT
        + priority
        + encode.short_string(message.message_id)
    )
    parts = [
        _method_frame(channel, message.exchange, message.routing_key),
        _FRAME.pack(_HEADER_FRAME, channel, len(properties)),
        properties,
        _END,
    ]
    for start in range(0, len(body), max_body_frame):
        chunk = body[start : start + max_body_frame]
        parts += (_FRAME.pack(_BODY_FRAME, channel, len(chunk)), chunk, _END)
    return b"".join(parts)


def _forget_return(returns: dict[str, int], message_id: str, tag: int, _: object) -> None:
    if returns.get(message_id) == tag:
        del returns[message_id]


async def publish(
    channel: aiormq.Channel, messages: Sequence[Outgoing]
) -> list[asyncio.Future[object]]:
    """Write ``messages`` to ``channel`` (in confirm mode) in one go; return one future per
    message that resolves with the broker's Ack (or, for a message no queue took, the
    returned message) or fails with its Nack."""
    if not channel.publisher_confirms:
        raise RuntimeError("publish() needs a channel in confirm mode")
    number, limit = channel.number, channel.max_content_size
    encoded = [encode_message(number, m, limit) for m in messages]
    futures: list[asyncio.Future[object]] = []
    async with channel.lock:  # delivery tags must follow the order of the writes
        if channel.is_closed:
            raise aiormq.exceptions.ChannelInvalidStateError(f"{channel!r} closed")
        tag = channel.delivery_tag
        returns = channel.message_id_delivery_tag
        for message in messages:
            tag += 1
            returns[message.message_id] = tag  # how aiormq matches a return to its publish
            # The channel's own future, as aiormq's basic_publish makes it: the channel fails
            # it when it closes (an error the broker closed it with, a lost connection). A
            # plain loop future would be left pending until the caller's timeout.
            future: asyncio.Future[object] = channel.create_future()
            channel.confirmations[tag] = future
            future.add_done_callback(partial(_forget_return, returns, message.message_id, tag))
            futures.append(future)
        channel.delivery_tag = tag
        await channel.write_queue.put(ChannelFrame(payload=b"".join(encoded), should_close=False))
    return futures
