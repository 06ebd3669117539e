"""Opening the connection to RabbitMQ: the URL's connection options, the first connect's
retries, and what a refused connect means to the user.

aio-pika's robust connection reconnects by itself once it has been open; the first
connect is asyncq's own loop of ``connection_attempts`` tries ``retry_delay`` apart, so a
worker started before its broker can wait for it, and a mistake is reported at once:

* a closed port or an unknown host is ``BrokerUnavailable`` (tried again, if asked);
* wrong credentials (ACCESS_REFUSED) and a vhost the user may not open (NOT_ALLOWED) are
  ``ConfigurationError``: no retry would change them.

A URL may name several hosts, the nodes of a cluster (``amqp://u:p@h1:5672,h2:5672/vhost``).
Every connect, the first and each of aio-pika's reconnects alike, and each connect of the
consume connection (fetcher.py), is one round over them (:class:`Rotation`): the first
host that accepts the TCP connection is the one the AMQP handshake runs on. A round starts
at the host after the one that answered last, from a random one in each process, so
clients spread over the nodes and a reconnect tries the survivors before the node it lost.
A connect fails (``BrokerUnavailable``) only when no host answered in its round, so a
producer sees that only while no node answers.

aiormq and aio-pika log each failed try themselves (an ERROR per refused TCP connect, an
INFO per "reconnecting"), which would print two or three lines of their own before
asyncq's one. Those lines say nothing asyncq's error does not, so they are held back
while the first connect runs, and only then: once the connection is up, the same loggers
are the record of a later outage and its reconnects, which asyncq does not log itself.

:class:`Link` is what the backend's parts share of it: the connection, the publishing
channel (in confirm mode), short-lived channels for one-off questions, and the wait for a
channel RabbitMQ closed over an error to be open again.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractContextManager, asynccontextmanager, contextmanager
from ssl import SSLContext
from typing import Any
from urllib.parse import unquote, urlsplit

import aio_pika
import aiormq
import anyio
from aio_pika.abc import AbstractChannel, AbstractRobustChannel, AbstractRobustConnection
from aiormq.connection import TransportFactory
from pamqp import commands as spec
from pamqp import frame as pamqp_frame
from yarl import URL

from asyncq.backend import redact_url
from asyncq.errors import BrokerError, BrokerUnavailable, ConfigurationError

from .errors import mapped
from .settings import AmqpSettings, Host

__all__ = [
    "CONNECT_TIMEOUT",
    "Link",
    "Rotation",
    "connection_name",
    "default_max_message_size",
    "open_connection",
    "server_version",
]

CONNECT_TIMEOUT = 10.0
"""Seconds one connect attempt may take (TCP, TLS and the AMQP handshake)."""

RECONNECT_INTERVAL = 0.5
"""Seconds between aio-pika's reconnects after a connection that was open is lost."""

_CONNECT_LOGGERS = ("aiormq.connection", "aio_pika.connection", "aio_pika.robust_connection")


class Rotation:
    """The order in which one connection tries a URL's hosts, round after round."""

    def __init__(self, hosts: tuple[Host, ...]) -> None:
        self.hosts = hosts
        self._next = random.randrange(len(hosts))
        self.current = hosts[self._next]
        """The host that answered last (before any did, the first one a round tries)."""

    @property
    def timeout(self) -> float:
        """Seconds one host may take to answer a connect: a share of CONNECT_TIMEOUT, so
        that a host that swallows packets leaves time for the others in the round."""
        return max(CONNECT_TIMEOUT / len(self.hosts), 1.0)

    def round(self) -> list[Host]:
        start, count = self._next, len(self.hosts)
        # Should no host answer, the next round starts one further on.
        self._next = (start + 1) % count
        return [self.hosts[(start + i) % count] for i in range(count)]

    def answered(self, host: Host) -> None:
        self.current = host
        self._next = (self.hosts.index(host) + 1) % len(self.hosts)


class Link:
    """The backend's connection to RabbitMQ and its publishing channel, open from
    :meth:`open` to :meth:`close`."""

    def __init__(self, settings: AmqpSettings) -> None:
        self.settings = settings
        self.where = redact_url(settings.connection_url)
        self.max_message_size: int | None = None
        self._connection: AbstractRobustConnection | None = None
        self._publisher: AbstractRobustChannel | None = None
        self._renewing = asyncio.Lock()

    async def open(self) -> None:
        self._connection = connection = await open_connection(self.settings)
        self.max_message_size = self.settings.max_message_size or default_max_message_size(
            server_version(connection)
        )
        with self.errors("connecting"):
            self._publisher = await connection.channel(publisher_confirms=True)

    async def close(self) -> None:
        connection, self._connection, self._publisher = self._connection, None, None
        if connection is not None:
            # Closing returns every unacknowledged delivery (prefetched, not started) to
            # its queue.
            await connection.close()

    def errors(self, action: str) -> AbstractContextManager[None]:
        """Map the driver's exceptions to asyncq's (see errors.py) for ``action``."""
        return mapped(action, self.where)

    @property
    def connection(self) -> AbstractRobustConnection:
        if self._connection is None:
            raise BrokerError("the AMQP backend is not connected: open the App first")
        return self._connection

    @property
    def publisher(self) -> AbstractRobustChannel:
        if self._publisher is None:
            raise BrokerError("the AMQP backend is not connected: open the App first")
        return self._publisher

    async def renew_publisher(self, stale: object) -> AbstractRobustChannel | None:
        """Put a new publishing channel in place of the one whose aiormq channel is
        ``stale``; the one replaced, for the caller to close, or None when it was replaced
        already (by another caller, or by aio-pika's reopen after a reconnect)."""
        async with self._renewing:
            current = self.publisher
            if await current.get_underlay_channel() is not stale:
                return None
            with self.errors("opening a publishing channel"):
                self._publisher = await self.connection.channel(publisher_confirms=True)
            return current

    def version(self) -> tuple[int, ...] | None:
        return server_version(self._connection) if self._connection is not None else None

    @asynccontextmanager
    async def channel(self) -> AsyncIterator[AbstractChannel]:
        """A channel of its own for the block (closed after it), for questions that may
        close their channel: a passive declare of a queue that may not exist, a browse."""
        channel = await self.connection.channel(publisher_confirms=False)
        try:
            yield channel
        finally:
            if not channel.is_closed:
                with anyio.CancelScope(shield=True):
                    await channel.close()

    async def reopened(self, channel: AbstractRobustChannel) -> None:
        """Wait (at most ``publish_timeout``) until ``channel`` is open again after RabbitMQ
        closed it over an error: a refused declaration, a publish to a missing exchange.

        RabbitMQ closes the channel of such an error (PRECONDITION_FAILED, NOT_FOUND), and
        aio-pika reopens it in a task of its own, later. Raising the error at once would let
        the caller's next call (another enqueue, even for another queue) find the channel
        still closed and fail with ChannelInvalidStateError, reported as "RabbitMQ
        unreachable" although RabbitMQ answered; so the error waits for the reopen.
        """
        reopened = anyio.Event()

        def on_reopen(*_: object) -> None:
            reopened.set()

        channel.reopen_callbacks.add(on_reopen)
        try:
            with anyio.move_on_after(self.settings.publish_timeout):
                if channel.is_closed:  # else reopened already
                    await reopened.wait()
        finally:
            channel.reopen_callbacks.discard(on_reopen)


def default_max_message_size(version: tuple[int, ...] | None) -> int | None:
    """RabbitMQ's default ``max_message_size`` for a server version: 128 MiB until 4.0
    lowered it to 16 MiB. None for a broker that does not say its version."""
    if version is None:
        return None
    return 16 * 1024 * 1024 if version >= (4,) else 128 * 1024 * 1024


async def open_connection(settings: AmqpSettings) -> AbstractRobustConnection:
    """Connect, trying ``connection_attempts`` times; asyncq's own error if it fails."""
    where = redact_url(settings.connection_url)
    name = connection_name(settings)
    # aio-pika and aiormq read credentials, vhost and options from a URL of one host; the
    # transport (_Transport) decides which host each connect reaches.
    one = settings.url_for(settings.hosts[0])
    url = URL(one).update_query(heartbeat=settings.heartbeat, name=name)
    attempts, delay = settings.connection_attempts, settings.retry_delay
    rotation = Rotation(settings.hosts)
    with _quiet(_CONNECT_LOGGERS):
        for attempt in range(1, attempts + 1):
            connection = _Connection(
                url,
                rotation=rotation,
                reconnect_interval=RECONNECT_INTERVAL,
                channel_max=settings.channel_max,
            )
            try:
                await connection.connect(timeout=CONNECT_TIMEOUT)
                return connection
            except BaseException as exc:
                with anyio.CancelScope(shield=True):
                    await connection.close()
                refused = _refusal(exc, settings.connection_url)
                if refused is not None:
                    raise refused from exc
                if not isinstance(exc, _UNREACHABLE):
                    raise
                if attempt == attempts:
                    tries = f" ({attempts} attempts, {delay:g} s apart)" if attempts > 1 else ""
                    raise BrokerUnavailable(
                        f"RabbitMQ at {where} unreachable connecting{tries}: {_reason(exc)}"
                    ) from exc
            await anyio.sleep(delay)  # the broker is down: nothing to wait on but time
    raise AssertionError("unreachable")  # the loop returns or raises


def connection_name(settings: AmqpSettings, purpose: str = "") -> str:
    """The name a connection shows in ``rabbitmqctl list_connections user_provided_name``
    and the management UI, so an operator can tell which app and process holds it."""
    name = f"asyncq {settings.prefix} {socket.gethostname()}:{os.getpid()}"
    return f"{name} {purpose}" if purpose else name


_UNREACHABLE = (aiormq.exceptions.AMQPConnectionError, ConnectionError, OSError, TimeoutError)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return f"no answer within {CONNECT_TIMEOUT:g} s"
    return str(exc) or type(exc).__name__


def _refusal(exc: BaseException, url: str) -> ConfigurationError | None:
    """The one-line error for a connect RabbitMQ refused on account of the URL, or None.

    RabbitMQ refuses a login with ACCESS_REFUSED (aiormq raises ProbableAuthenticationError),
    and the opening of a vhost that does not exist or that the user has no permission on
    with NOT_ALLOWED; aiormq 7 reports that one as an unexpected frame (a Connection.Close
    where Connection.OpenOk was due), without the reply text.
    """
    parts = urlsplit(url)
    user = unquote(parts.username or "guest")
    vhost = unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
    where = redact_url(url)
    login_refused = (
        aiormq.exceptions.ProbableAuthenticationError,
        aiormq.exceptions.AuthenticationError,
    )
    if isinstance(exc, login_refused):
        return ConfigurationError(
            f"RabbitMQ at {where} refused the connection: user {user!r} could not log in "
            "(wrong user name or password?)"
        )
    closed = isinstance(exc, aiormq.exceptions.ConnectionNotAllowed) or (
        isinstance(exc, aiormq.exceptions.InvalidFrameError)
        and "Connection.OpenOk" in str(exc)
        and "Connection.Close" in str(exc)
    )
    if closed:
        return ConfigurationError(
            f"RabbitMQ at {where} refused the connection: vhost {vhost!r} does not exist or "
            f"user {user!r} may not use it"
        )
    return None


@contextmanager
def _quiet(names: tuple[str, ...]) -> Iterator[None]:
    """Drop what the named loggers log in this block (see the module docstring)."""
    drop = logging.Filter("\0")  # a name no logger has: the filter passes nothing
    loggers = [logging.getLogger(name) for name in names]
    for logger in loggers:
        logger.addFilter(drop)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(drop)


def server_version(connection: AbstractRobustConnection) -> tuple[int, ...] | None:
    """The broker's version from the connection's server properties (e.g. (3, 12, 1))."""
    transport = connection.transport
    if transport is None:
        return None
    properties: Any = getattr(transport.connection, "server_properties", None) or {}
    raw = properties.get("version")
    text = raw.decode() if isinstance(raw, bytes) else str(raw or "")
    numbers: list[int] = []
    for part in text.split("."):
        digits = "".join(c for c in part if c.isdigit()) if part[:1].isdigit() else ""
        if not digits:
            break
        numbers.append(int(digits))
    return tuple(numbers) or None


class _Connection(aio_pika.RobustConnection):
    """aio-pika's robust connection, on the hosts of a :class:`Rotation` (every reconnect
    is a new round) and with ``channel_max`` applied to the handshake."""

    def __init__(
        self, url: URL, *, rotation: Rotation, channel_max: int | None, **kwargs: Any
    ) -> None:
        super().__init__(url, **kwargs)
        self.rotation = rotation
        # Handed to aiormq's Connection with the other connection arguments.
        self.kwargs["transport_factory"] = _Transport(rotation, channel_max)

    def __str__(self) -> str:
        # aio-pika's log lines ("Connection to ... closed. Reconnecting") name the host this
        # connection reached, not the one in the URL aiormq was given.
        host = self.rotation.current
        shown = self.url.with_host(host.name).with_port(host.port)
        return str(shown.with_password("******") if shown.password else shown)


class _Transport(TransportFactory):
    """Opens the TCP (or TLS) stream like aiormq's own factories, to the first host of a
    round that accepts it, and (given a ``channel_max``) with a writer that puts it into
    the Connection.TuneOk this client sends.

    aiormq (7.2) answers the broker's Connection.Tune with the broker's own channel_max,
    whatever the client wants; the TuneOk frame is the one place AMQP lets a client ask
    for fewer, and RabbitMQ then holds the connection to that number.
    """

    def __init__(self, rotation: Rotation, channel_max: int | None) -> None:
        self.rotation = rotation
        self.channel_max = channel_max

    async def create(
        self, url: URL, **kwargs: Any
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        provider = kwargs.pop("ssl_context_provider", None)
        ssl = await provider.get_context() if url.scheme == "amqps" and provider else None
        failures: list[str] = []
        for host in self.rotation.round():
            try:
                async with asyncio.timeout(self.rotation.timeout):
                    reader, protocol, transport = await _stream(host, ssl, kwargs)
            except TimeoutError:
                failures.append(f"{host}: no answer within {self.rotation.timeout:g} s")
                continue
            except OSError as exc:
                failures.append(f"{host}: {exc}" if len(self.rotation.hosts) > 1 else str(exc))
                continue
            self.rotation.answered(host)
            loop = asyncio.get_running_loop()
            writer: asyncio.StreamWriter
            if self.channel_max is None:
                writer = asyncio.StreamWriter(transport, protocol, reader, loop)
            else:
                writer = _TuneOkWriter(transport, protocol, reader, loop)
                writer.channel_max = self.channel_max
            return reader, writer
        raise aiormq.exceptions.AMQPConnectionError("; ".join(failures))


async def _stream(
    host: Host, ssl: SSLContext | None, kwargs: dict[str, Any]
) -> tuple[asyncio.StreamReader, asyncio.StreamReaderProtocol, asyncio.Transport]:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(loop=loop)
    protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
    transport, _ = await loop.create_connection(
        lambda: protocol, host.name, host.port, ssl=ssl, **kwargs
    )
    return reader, protocol, transport


class _TuneOkWriter(asyncio.StreamWriter):
    channel_max = 0
    _tuned = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        # Connection.TuneOk: a method frame on channel 0 of class 10, method 31.
        if not self._tuned and bytes(data[:3]) == b"\x01\x00\x00" and data[7:11] == b"\0\n\0\x1f":
            self._tuned = True
            _, channel, frame = pamqp_frame.unmarshal(bytes(data))
            if isinstance(frame, spec.Connection.TuneOk):
                broker = frame.channel_max
                frame.channel_max = min(broker, self.channel_max) if broker else self.channel_max
                data = pamqp_frame.marshal(frame, channel)
        super().write(data)
