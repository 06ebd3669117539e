"""A TCP proxy on a loopback port between the soak's clients and one broker node, which the
fault injector can cut and delay: what network namespaces and veth pairs would do, without
the set-up (and without touching any interface but loopback).

* :meth:`Proxy.cut`: every proxied connection is closed at once, both ways, and for the
  length of the cut a new connection is accepted and closed straight away (the client sees
  the connection reset or closed by the peer, as when a link drops and a firewall rejects).
* :meth:`Proxy.delay`: for a while every chunk, either way, is delivered ``latency`` seconds
  after it arrived, in order: latency, not a bandwidth limit.
"""

from __future__ import annotations

import math
import socket

import anyio
from anyio.abc import SocketStream, TaskStatus

__all__ = ["Proxy", "free_port"]

_CHUNK = 65536


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Proxy:
    """Forward ``127.0.0.1:port`` to ``upstream``; run :meth:`serve` in a task group."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.port = free_port()
        self.latency = 0.0
        self.refusing = False
        self.connections = 0
        """Connections accepted so far (refused ones included)."""
        self._live: set[anyio.CancelScope] = set()

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=self.port)
        async with listener, anyio.create_task_group() as tg:
            task_status.started()
            await listener.serve(self._handle, tg)

    async def cut(self, seconds: float) -> None:
        """Drop every connection and refuse new ones for ``seconds``."""
        self.refusing = True
        try:
            for scope in list(self._live):
                scope.cancel()
            await anyio.sleep(seconds)
        finally:
            self.refusing = False

    async def delay(self, latency: float, seconds: float) -> None:
        """Deliver every chunk ``latency`` seconds late for ``seconds``."""
        self.latency = latency
        try:
            await anyio.sleep(seconds)
        finally:
            self.latency = 0.0

    async def _handle(self, client: SocketStream) -> None:
        self.connections += 1
        async with client:
            if self.refusing:
                return
            with anyio.CancelScope() as scope:
                self._live.add(scope)
                try:
                    try:
                        upstream = await anyio.connect_tcp(*self.upstream)
                    except OSError:
                        return  # the broker is down: the client sees its connection closed
                    async with upstream, anyio.create_task_group() as tg:
                        tg.start_soon(self._pipe, client, upstream, tg.cancel_scope)
                        tg.start_soon(self._pipe, upstream, client, tg.cancel_scope)
                finally:
                    self._live.discard(scope)

    async def _pipe(
        self, source: SocketStream, sink: SocketStream, connection: anyio.CancelScope
    ) -> None:
        """One direction: a reader stamps each chunk with when it is due, a writer sends it
        then, so a delay shifts the stream in time instead of slowing it down."""
        # Unbounded: what waits in it is at most a latency's worth of one connection's data.
        send, receive = anyio.create_memory_object_stream[tuple[float, bytes]](math.inf)

        async def read() -> None:
            async with send:
                while True:
                    try:
                        data = await source.receive(_CHUNK)
                    except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                        return
                    await send.send((anyio.current_time() + self.latency, data))

        async def write() -> None:
            async with receive:
                async for at, data in receive:
                    await anyio.sleep_until(at)
                    try:
                        await sink.send(data)
                    except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                        connection.cancel()  # the reader may be waiting for more: end both
                        return

        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(read)
                tg.start_soon(write)
        finally:
            # Either side closing ends the connection: the protocols proxied here (Redis,
            # PostgreSQL, AMQP) never half-close, so a half-open pair would only hang.
            connection.cancel()
