"""A TCP proxy on a loopback port in front of RabbitMQ that can hold back the server's
replies: while held, what the client sends still reaches the server (a publish lands in
its queue) but nothing comes back (its confirm is never seen), until :meth:`cut` closes
every connection, as a link that drops. Run :meth:`serve` in a task group."""

from __future__ import annotations

import anyio
from anyio.abc import SocketStream, TaskStatus
from redis_backend.redis_support import free_port

__all__ = ["ReplyHoldingProxy"]


class ReplyHoldingProxy:
    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self.holding = False
        self._live: set[anyio.CancelScope] = set()

    def url(self, url: str) -> str:
        """``url`` (of the local RabbitMQ) through this proxy."""
        return url.replace(f"127.0.0.1:{self.upstream_port}", f"127.0.0.1:{self.port}", 1)

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=self.port)
        async with listener, anyio.create_task_group() as tg:
            task_status.started()
            await listener.serve(self._handle, tg)

    def hold(self) -> None:
        """From now on the server's replies wait (on every connection) until the cut."""
        self.holding = True

    def cut(self) -> None:
        """Close every proxied connection; connections made after it pass freely."""
        self.holding = False
        for scope in list(self._live):
            scope.cancel()

    async def _handle(self, client: SocketStream) -> None:
        async with client:
            with anyio.CancelScope() as scope:
                self._live.add(scope)
                try:
                    upstream = await anyio.connect_tcp("127.0.0.1", self.upstream_port)
                    async with upstream, anyio.create_task_group() as tg:
                        tg.start_soon(self._pipe, client, upstream, False, tg.cancel_scope)
                        tg.start_soon(self._pipe, upstream, client, True, tg.cancel_scope)
                except OSError:
                    return  # the server is down: the client sees its connection closed
                finally:
                    self._live.discard(scope)

    async def _pipe(
        self, source: SocketStream, sink: SocketStream, replies: bool, both: anyio.CancelScope
    ) -> None:
        try:
            while True:
                data = await source.receive()
                if replies and self.holding:
                    await anyio.sleep_forever()  # held: only the cut ends this connection
                await sink.send(data)
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            return
        finally:
            both.cancel()  # either side closing ends the connection
