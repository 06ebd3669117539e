"""The consume connection: a small AMQP 0-9-1 client of asyncq's own, for deliveries only.

A worker receives its jobs on a TCP connection of their own, apart from the one aio-pika
holds for publishing and everything else. Two reasons:

* **Speed.** aiormq reads each frame with three awaited ``readexactly`` calls under a lock,
  decodes it with pamqp's generic unmarshalling, and passes it to the channel through an
  ``asyncio.Queue``: three frames per delivery, about 130 µs of CPU before any job library
  (benchmarks/README.md, the floors), which capped a worker near 5,800 deliveries a second
  where RabbitMQ sends 18,000 or more. Here an ``asyncio.Protocol`` splits whatever one
  socket read brings with ``struct``, decodes a delivery's three frames in place (only the
  fields asyncq reads: tags, the redelivered flag, the message id and headers), and calls
  the consumer's callback directly: no task, queue or await per frame. Acks go out in one
  write per event-loop turn.
* **RabbitMQ's own advice**: it blocks a publishing connection under memory or disk
  pressure, and a consumer sharing it could then not ack, so the pressure could not drain.

What it speaks is what a consumer needs and nothing more: the handshake (PLAIN login,
heartbeats, the frame size), one channel, ``basic.qos``, ``basic.consume`` and
``basic.cancel``, deliveries, ``basic.ack`` and ``basic.nack``, and closing. Rare frames
(the handshake, replies, closes) are decoded with pamqp. Whatever ends the connection or its
channel (a lost socket, missed heartbeats, a close from the broker, such as over a consumer
timeout) closes the whole :class:`Receiver`: its unacknowledged deliveries go back to their
queues, as they do in the broker, and its owner opens a new one (fetcher.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import struct
from collections.abc import Callable
from typing import Any, NamedTuple
from urllib.parse import unquote, urlsplit

from pamqp import commands as spec
from pamqp import decode
from pamqp import frame as pamqp_frame
from pamqp.common import FieldTable
from pamqp.header import ProtocolHeader
from pamqp.heartbeat import Heartbeat

from asyncq.backend import redact_url
from asyncq.errors import BrokerError, BrokerUnavailable

__all__ = ["Incoming", "Receiver"]

log = logging.getLogger("asyncq.amqp")

CHANNEL = 1
"""The one channel a receiver opens."""

_FRAME_HEAD = struct.Struct(">BHI")  # type, channel, payload size
_METHOD_ID = struct.Struct(">HH")  # class id, method id
_U64 = struct.Struct(">Q")
_HEADER_HEAD = struct.Struct(">HHQH")  # class id, weight, body size, property flags
_ACK = struct.Struct(">BHIHHQBB")  # a whole basic.ack or basic.nack frame
_METHOD, _HEADER, _BODY, _HEARTBEAT = 1, 2, 3, 8
_END = 0xCE
_DELIVER = (60, 60)
_HEARTBEAT_FRAME = pamqp_frame.marshal(Heartbeat(), 0)
_PORTS = {"amqp": 5672, "amqps": 5671}

# Basic's properties (AMQP 0-9-1, 4.2.6.1) in wire order: flag bit, and how to skip or read
# the value. Only the headers, the priority and the message id are kept.
_SHORT, _OCTET, _TABLE, _LONGLONG = 0, 1, 2, 3
_PROPERTIES = (
    (1 << 15, _SHORT),  # content type
    (1 << 14, _SHORT),  # content encoding
    (1 << 13, _TABLE),  # headers
    (1 << 12, _OCTET),  # delivery mode
    (1 << 11, _OCTET),  # priority
    (1 << 10, _SHORT),  # correlation id
    (1 << 9, _SHORT),  # reply to
    (1 << 8, _SHORT),  # expiration
    (1 << 7, _SHORT),  # message id
    (1 << 6, _LONGLONG),  # timestamp
    (1 << 5, _SHORT),  # type
    (1 << 4, _SHORT),  # user id
    (1 << 3, _SHORT),  # app id
    (1 << 2, _SHORT),  # cluster id
)
_HEADERS_FLAG, _PRIORITY_FLAG, _MESSAGE_ID_FLAG = 1 << 13, 1 << 11, 1 << 7


class Incoming(NamedTuple):
    """One delivery, as much of it as asyncq reads."""

    consumer_tag: str
    delivery_tag: int
    redelivered: bool
    message_id: str | None
    headers: FieldTable
    body: bytes
    priority: int = 0


OnDelivery = Callable[[Incoming], None]
OnClose = Callable[["Receiver", BaseException], None]


def _properties(payload: bytes, flags: int) -> tuple[str | None, FieldTable, int]:
    """The message id, headers and priority of a content header's properties (from offset
    14)."""
    at, message_id, headers, priority = 14, None, {}, 0
    for flag, kind in _PROPERTIES:
        if not flags & flag:
            continue
        if kind == _SHORT:
            end = at + 1 + payload[at]
            if flag == _MESSAGE_ID_FLAG:
                message_id = payload[at + 1 : end].decode()
            at = end
        elif kind == _TABLE:
            size, table = decode.field_table(payload[at:])
            if flag == _HEADERS_FLAG:
                headers = table
            at += size
        elif kind == _OCTET:
            if flag == _PRIORITY_FLAG:
                priority = payload[at]
            at += 1
        else:
            at += 8
    return message_id, headers, priority


def ssl_context(url: str) -> ssl.SSLContext | None:
    """A verifying TLS context for ``amqps://``, as aio-pika makes one for the other
    connection; None for ``amqp://``."""
    return ssl.create_default_context() if urlsplit(url).scheme == "amqps" else None


class Receiver(asyncio.Protocol):
    """One consume connection and its channel, from :meth:`open` until it closes.

    ``on_delivery`` gets every delivery, in order, from inside the socket's read; it must
    not block. ``on_close`` hears once why the receiver closed (also after :meth:`close`,
    or when :meth:`open` fails).
    """

    def __init__(
        self,
        url: str,
        *,
        name: str,
        heartbeat: int,
        channel_max: int | None,
        on_delivery: OnDelivery,
        on_close: OnClose,
    ) -> None:
        parts = urlsplit(url)
        self._host, self._port = parts.hostname or "localhost", parts.port or _PORTS[parts.scheme]
        self._ssl = ssl_context(url)
        self._user = unquote(parts.username or "guest")
        self._password = unquote(parts.password or "guest")
        self._vhost = unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
        self.where = redact_url(url)
        self._name = name
        self._heartbeat = heartbeat
        self._channel_max = channel_max
        self._on_delivery = on_delivery
        self._on_close = on_close
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._pending: tuple[str, int, bool] | None = None
        """The delivery whose header is due: consumer tag, delivery tag, redelivered."""
        # message id, headers, body size, body chunks, priority
        self._content: tuple[str | None, FieldTable, int, list[bytes], int] | None = None
        """The delivery whose body is due: message id, headers, size, chunks so far."""
        self._outgoing: list[bytes] = []
        self._reply: asyncio.Future[Any] | None = None
        self._expected: tuple[type, ...] = ()
        self._rpc = asyncio.Lock()
        self._ready: asyncio.Future[None] = self._loop.create_future()
        self._gone: asyncio.Future[None] = self._loop.create_future()
        self.frame_max = 131072
        self.server_properties: FieldTable = {}
        self._beat: asyncio.TimerHandle | None = None
        self._heard = self._said = 0.0
        self.closed: BaseException | None = None
        """Why it closed; None while open."""

    # -- opening and closing -------------------------------------------------------------------
    async def open(self, timeout: float) -> None:
        """Connect, log in and open the channel; BrokerUnavailable (or BrokerError, for a
        refusal) if that fails within ``timeout`` seconds."""
        try:
            async with asyncio.timeout(timeout):
                await self._loop.create_connection(
                    lambda: self, self._host, self._port, ssl=self._ssl
                )
                await self._ready
                await self._call(spec.Channel.Open(), spec.Channel.OpenOk)
        except TimeoutError:
            error = BrokerUnavailable(f"RabbitMQ at {self.where} did not answer in time")
            self._lose(error)
            raise error from None
        except OSError as exc:
            error = BrokerUnavailable(f"RabbitMQ at {self.where} unreachable consuming: {exc}")
            self._lose(error)
            raise error from exc
        except BaseException as exc:
            self._lose(exc if isinstance(exc, BrokerError) else BrokerError(str(exc)))
            raise

    async def close(self) -> None:
        """Close the connection (the broker takes back what it delivered and nobody acked)."""
        if self.closed is not None:
            return
        self._flush()
        try:
            async with asyncio.timeout(1.0):
                bye = spec.Connection.Close(200, "bye", 0, 0)
                await self._call(bye, spec.Connection.CloseOk, channel=0)
        except (TimeoutError, BrokerError):
            pass  # closed meanwhile, or no answer: the socket closes all the same
        self._lose(BrokerUnavailable(f"RabbitMQ at {self.where}: the consume connection closed"))
        if self._transport is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):  # the socket is closed when this returns
                    await asyncio.shield(self._gone)

    @property
    def is_closed(self) -> bool:
        return self.closed is not None

    def _lose(self, why: BaseException) -> None:
        """Close for ``why``, once: fail the call waiting for a reply and tell the owner."""
        if self.closed is not None:
            return
        self.closed = why
        if self._beat is not None:
            self._beat.cancel()
        if self._transport is not None:
            self._transport.close()
        for future in (self._reply, self._ready):
            if future is not None and not future.done():
                future.set_exception(why)
                future.exception()  # retrieved: nobody may be waiting any more
        self._on_close(self, why)

    # -- asyncio.Protocol ----------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        transport.write(ProtocolHeader().marshal())

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._gone.done():
            self._gone.set_result(None)
        reason = f": {exc}" if exc else ""
        self._lose(BrokerUnavailable(f"RabbitMQ at {self.where} closed the connection{reason}"))

    def data_received(self, data: bytes) -> None:
        self._heard = self._loop.time()
        if self._buffer:  # the start of a frame came in the read before
            self._buffer += data
            data = bytes(self._buffer)
            self._buffer.clear()
        at, size = 0, len(data)
        try:
            while size - at >= 8:
                kind, channel, length = _FRAME_HEAD.unpack_from(data, at)
                end = at + 7 + length
                if end >= size:
                    break  # the rest of this frame is still to come
                if data[end] != _END:
                    raise BrokerError(f"RabbitMQ at {self.where} sent a malformed frame")
                start, at = at, end + 1
                if kind == _BODY:
                    self._body(data[start + 7 : end])
                elif kind == _METHOD and _METHOD_ID.unpack_from(data, start + 7) == _DELIVER:
                    self._deliver(data[start + 7 : end])
                elif kind == _HEADER:
                    self._header(data[start + 7 : end])
                elif kind == _METHOD:
                    self._control(channel, data[start:at])
                # A heartbeat says only that the broker is there, which any data says.
        except BrokerError as exc:
            self._lose(exc)
            return
        if at < size:
            self._buffer += data[at:]
        self._flush()  # the acks the callbacks sent meanwhile

    # -- deliveries ----------------------------------------------------------------------------
    def _deliver(self, payload: bytes) -> None:
        # basic.deliver: consumer tag, delivery tag, redelivered, exchange, routing key.
        end = 5 + payload[4]
        tag = payload[5:end].decode()
        (delivery_tag,) = _U64.unpack_from(payload, end)
        self._pending = (tag, delivery_tag, bool(payload[end + 8] & 1))

    def _header(self, payload: bytes) -> None:
        _, _, size, flags = _HEADER_HEAD.unpack_from(payload)
        message_id, headers, priority = _properties(payload, flags)
        self._content = (message_id, headers, size, [], priority)
        if size == 0:
            self._complete()

    def _body(self, chunk: bytes) -> None:
        content = self._content
        if content is None:
            raise BrokerError(f"RabbitMQ at {self.where} sent a body frame out of place")
        chunks = content[3]
        chunks.append(chunk)
        if sum(map(len, chunks)) >= content[2]:
            self._complete()

    def _complete(self) -> None:
        pending, content = self._pending, self._content
        self._pending = self._content = None
        if pending is None or content is None:
            raise BrokerError(f"RabbitMQ at {self.where} sent content without a delivery")
        message_id, headers, _, chunks, priority = content
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self._on_delivery(Incoming(*pending, message_id, headers, body, priority))

    # -- acknowledgements ----------------------------------------------------------------------
    def ack(self, delivery_tag: int, *, multiple: bool) -> None:
        """Acknowledge, in this event-loop turn's one write."""
        self._send_ack(80, delivery_tag, 1 if multiple else 0)

    def nack(self, delivery_tag: int, *, requeue: bool) -> None:
        """Refuse one delivery: back to the front of its queue with ``requeue``."""
        self._send_ack(120, delivery_tag, 2 if requeue else 0)

    def _send_ack(self, method: int, delivery_tag: int, bits: int) -> None:
        if self.closed is not None:
            return  # the broker has taken the delivery back already
        self._outgoing.append(_ACK.pack(_METHOD, CHANNEL, 13, 60, method, delivery_tag, bits, _END))
        if len(self._outgoing) == 1:
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        if self._outgoing and self._transport is not None and self.closed is None:
            self._transport.write(b"".join(self._outgoing))
            self._said = self._loop.time()
        self._outgoing.clear()

    # -- consumers -----------------------------------------------------------------------------
    async def qos(self, prefetch: int) -> None:
        await self._call(spec.Basic.Qos(prefetch_count=prefetch), spec.Basic.QosOk)

    async def consume(self, queue: str, consumer_tag: str, arguments: FieldTable) -> None:
        """Start a consumer; its deliveries may come before this returns."""
        method = spec.Basic.Consume(queue=queue, consumer_tag=consumer_tag, arguments=arguments)
        await self._call(method, spec.Basic.ConsumeOk)

    async def cancel(self, consumer_tag: str) -> None:
        """Stop a consumer. Deliveries already on their way still come."""
        await self._call(spec.Basic.Cancel(consumer_tag), spec.Basic.CancelOk)

    async def _call(self, method: Any, reply: type, channel: int = CHANNEL) -> Any:
        """Send ``method`` and wait for its ``reply``, one call at a time."""
        async with self._rpc:
            if self.closed is not None:
                raise self.closed
            self._reply = future = self._loop.create_future()
            self._expected = (reply,)
            self._flush()
            self._write(pamqp_frame.marshal(method, channel))
            try:
                return await future
            finally:
                self._reply = None

    def _write(self, data: bytes) -> None:
        if self._transport is not None and self.closed is None:
            self._transport.write(data)
            self._said = self._loop.time()

    # -- everything else the broker says -------------------------------------------------------
    def _control(self, channel: int, raw: bytes) -> None:
        try:
            _, _, method = pamqp_frame.unmarshal(raw)
        except Exception as exc:  # pamqp raises several kinds for a frame it cannot read
            raise BrokerError(f"RabbitMQ at {self.where} sent a frame asyncq cannot read") from exc
        if isinstance(method, spec.Connection.Start):
            self._start(method)
        elif isinstance(method, spec.Connection.Tune):
            self._tune(method)
        elif isinstance(method, spec.Connection.OpenOk):
            if not self._ready.done():
                self._ready.set_result(None)
        elif isinstance(method, spec.Connection.Close | spec.Channel.Close):
            if isinstance(method, spec.Channel.Close):
                self._write(pamqp_frame.marshal(spec.Channel.CloseOk(), channel))
            else:
                self._write(pamqp_frame.marshal(spec.Connection.CloseOk(), 0))
            raise BrokerError(
                f"RabbitMQ at {self.where} closed the consume "
                f"{'connection' if channel == 0 else 'channel'}: "
                f"{method.reply_code} {method.reply_text}"
            )
        elif isinstance(method, spec.Basic.Cancel):
            # The queue went away (deleted): its consumer is gone too.
            log.warning(
                "RabbitMQ cancelled consumer %s: its queue was deleted", method.consumer_tag
            )
        elif self._reply is not None and isinstance(method, self._expected):
            if not self._reply.done():
                self._reply.set_result(method)
        else:
            log.debug("frame not expected on the consume connection: %r", method)

    def _start(self, start: spec.Connection.Start) -> None:
        self.server_properties = start.server_properties or {}
        mechanisms = (start.mechanisms or "").split()
        if "PLAIN" not in mechanisms:
            raise BrokerError(f"RabbitMQ at {self.where} offers no PLAIN login: {mechanisms}")
        properties: FieldTable = {
            "product": "asyncq",
            "connection_name": self._name,
            "capabilities": {"authentication_failure_close": True, "consumer_cancel_notify": True},
        }
        response = f"\0{self._user}\0{self._password}"
        self._write(pamqp_frame.marshal(spec.Connection.StartOk(properties, "PLAIN", response), 0))

    def _tune(self, tune: spec.Connection.Tune) -> None:
        # The client's own heartbeat, as aiormq asks for on the other connection (RabbitMQ
        # takes the client's word).
        heartbeat = self._heartbeat
        self.frame_max = tune.frame_max or self.frame_max
        channels = tune.channel_max or 65535
        if self._channel_max is not None:
            channels = min(channels, self._channel_max)
        tuned = spec.Connection.TuneOk(channels, self.frame_max, heartbeat)
        self._write(pamqp_frame.marshal(tuned, 0))
        self._write(pamqp_frame.marshal(spec.Connection.Open(self._vhost), 0))
        if heartbeat:
            self._heard = self._said = self._loop.time()
            self._beat = self._loop.call_later(heartbeat / 2, self._tick, heartbeat)

    def _tick(self, heartbeat: int) -> None:
        """Every half interval: say something if nothing was said, and give up on a broker
        silent for three intervals (as aio-pika does on the other connection)."""
        now = self._loop.time()
        if now - self._heard > 3 * heartbeat:
            self._lose(
                BrokerUnavailable(
                    f"RabbitMQ at {self.where} sent nothing for {3 * heartbeat} s (heartbeats)"
                )
            )
            return
        if now - self._said >= heartbeat / 2:
            self._write(_HEARTBEAT_FRAME)
        self._beat = self._loop.call_later(heartbeat / 2, self._tick, heartbeat)
