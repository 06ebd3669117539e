"""The hot commands' own connection: one socket, commands pipelined as they come, replies
parsed by hiredis and handed to their callers in order.

A job's path runs a few script calls (enqueue, take, settle); through redis-py each one
costs a pool checkout and return, a timeout context, a retry wrapper and several layers of
parsing, which measured at several times what encoding the command and parsing its reply
cost in hiredis. Here a call is: pack the command (hiredis), write it, await a future that
the reader sets from ``hiredis.Reader``. Calls from many tasks at once share the socket the
way a pipeline does, since Redis answers in order.

redis-py still opens the connection (so TLS, AUTH, ACL users, the database and the client
name are done the one way the rest of the backend does them) and serves every other
command, including the worker's blocking XREADGROUP, which must not sit in front of others.
A call that fails because the connection dropped is sent again on a new one, with the same
retry as redis-py's (about 1.5 s in all); a connection whose replies stop coming for the
socket timeout is closed, failing what was in flight with a timeout.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Sequence
from typing import Any, Protocol

import hiredis
import redis.asyncio as aioredis
from redis import exceptions as rx
from redis.asyncio.sentinel import SentinelConnectionPool

__all__ = ["Calls", "NotReplicated", "Wire", "check_replicas", "pack_args"]

Command = tuple[Any, ...]

_ERRORS: dict[str, type[rx.ResponseError]] = {
    "NOSCRIPT": rx.NoScriptError,
    "READONLY": rx.ReadOnlyError,
}


def _error(reply: hiredis.ReplyError) -> BaseException:
    message = str(reply)
    code = message.split(" ", 1)[0]
    if code == "LOADING":
        return rx.BusyLoadingError(message)
    return _ERRORS.get(code, rx.ResponseError)(message)


def pack_args(args: tuple[Any, ...]) -> list[bytes]:
    """redis-py's ``pack_command`` done by hiredis (see connection.py)."""
    # redis-py lets a command name carry its subcommand ("CONFIG GET"); the server wants
    # them as separate arguments.
    if isinstance(args[0], str) and " " in args[0]:
        args = (*args[0].split(), *args[1:])
    return [hiredis.pack_command(args)]


class Calls(Protocol):
    """What the backend asks of its hot connection: ``Wire`` on one server, ``ClusterWire``
    (cluster_wire.py) on a cluster."""

    async def execute(
        self, commands: Sequence[Command], *, wait: tuple[int, int] | None = None
    ) -> list[Any]: ...

    async def call(self, *command: Any) -> Any: ...

    def drop(self, error: BaseException) -> None: ...

    async def close(self) -> None: ...


class NotReplicated(rx.ConnectionError):
    """A write's ``WAIT`` ended with fewer replicas than asked: the write is on the master,
    but a failover now could lose it. Not sent again (it would wait as long again)."""


def check_replicas(acked: Any, wait: tuple[int, int], where: str) -> None:
    """Raise ``NotReplicated`` unless ``acked`` (WAIT's reply) reaches ``wait[0]``."""
    if isinstance(acked, BaseException):
        raise acked
    if int(acked) < wait[0]:
        raise NotReplicated(
            f"only {int(acked)} of {wait[0]} replicas of {where} took the write within "
            f"{wait[1]} ms: it may be lost if that master fails now (enqueue again with an "
            "idempotency key to be sure)"
        )


class _Link(asyncio.Protocol):
    """One open connection: the calls awaiting replies, and the protocol that answers them.

    redis-py opened the connection as an asyncio stream; the link takes its transport over
    as the protocol itself, so a reply is parsed and its caller woken from the socket's
    read, without a reader task in between (one event-loop hop less per round trip).
    """

    def __init__(self, conn: Any, timeout: float | None) -> None:
        self.conn = conn
        self.waiting: deque[tuple[asyncio.Future[Any], float]] = deque()
        self.timeout = timeout
        self.broken: BaseException | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._reader = hiredis.Reader(replyError=hiredis.ReplyError)
        writer: asyncio.StreamWriter = conn._writer
        self.transport = writer.transport
        # Told when the socket closes, so redis-py's own disconnect sees it closed.
        self._stream = self.transport.get_protocol()
        early = conn._reader._buffer  # what came before the handover (nothing, as a rule)
        self.transport.set_protocol(self)
        if early:
            self.data_received(bytes(early))
            early.clear()

    def send(self, packed: bytes, replies: int) -> list[asyncio.Future[Any]]:
        if self.broken is not None:
            raise rx.ConnectionError(f"connection lost: {self.broken}")
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        futures = [loop.create_future() for _ in range(replies)]
        self.transport.write(packed)
        self.waiting.extend((f, now) for f in futures)
        if self._timer is None and self.timeout is not None:
            self._timer = loop.call_later(self.timeout, self._check)
        return futures

    def data_received(self, data: bytes) -> None:
        reader, waiting = self._reader, self.waiting
        try:
            reader.feed(data)
            while (reply := reader.gets()) is not False:
                future, _ = waiting.popleft()
                if future.done():  # its caller was cancelled
                    continue
                if isinstance(reply, hiredis.ReplyError):
                    future.set_exception(_error(reply))
                else:
                    future.set_result(reply)
        except Exception as exc:  # a protocol error, or a reply nobody asked for
            self.fail(rx.ConnectionError(f"reading from Redis: {exc!r}"))

    def eof_received(self) -> bool:
        self.fail(rx.ConnectionError("Redis closed the connection"))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(rx.ConnectionError(f"connection lost: {exc}" if exc else "connection closed"))
        self._stream.connection_lost(exc)

    def _check(self) -> None:
        self._timer = None
        if not self.waiting or self.broken is not None or self.timeout is None:
            return
        oldest = self.waiting[0][1]
        late = time.monotonic() - oldest
        if late >= self.timeout:
            self.fail(rx.TimeoutError(f"no reply from Redis in {self.timeout:g} s"))
            return
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self.timeout - late, self._check)

    def fail(self, error: BaseException) -> None:
        """Mark the connection broken and fail every call awaiting a reply on it."""
        if self.broken is None:
            self.broken = error
            self.transport.abort()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self.waiting:
            future, _ = self.waiting.popleft()
            if not future.done():
                future.set_exception(error)

    async def close(self) -> None:
        self.fail(rx.ConnectionError("connection closed"))
        try:
            await self.conn.disconnect(nowait=True)
        except (rx.RedisError, OSError):
            pass


class Wire:
    """Pipelined calls on a connection of its own, opened like the client's pool's (or, on a
    cluster, like a node's)."""

    def __init__(self, source: aioredis.Redis | Any, *, timed: bool = True) -> None:
        """``source``: a client, or a cluster's node (``ClusterNode``), whose connections'
        settings this one's copies. ``timed``: a connection whose replies stop coming for
        the socket timeout is closed; False for blocking commands, whose callers set their
        own deadlines."""
        pool: Any = getattr(source, "connection_pool", source)
        self._pool = pool
        self._retry = pool.connection_kwargs.get("retry")
        self._timeout = pool.connection_kwargs.get("socket_timeout") if timed else None
        # What the client's own retry sends again (a dropped connection; a timeout too with
        # retry_on_timeout): a single call retries the same.
        self._retried = tuple(pool.connection_kwargs.get("retry_on_error") or [rx.ConnectionError])
        # Behind Sentinel, a master that answers READONLY has been demoted: a new connection
        # asks the sentinels again and reaches its successor.
        self._demotion_is_loss = isinstance(pool, SentinelConnectionPool)
        self._link: _Link | None = None
        self._opening: asyncio.Future[_Link] | None = None

    async def _open(self) -> _Link:
        link = self._link
        if link is not None and link.broken is None:
            return link
        if self._opening is not None:  # another call is connecting: share its connection
            return await asyncio.shield(self._opening)
        self._opening = asyncio.get_running_loop().create_future()
        try:
            if link is not None:
                self._link = None
                await link.close()
            conn = self._pool.connection_class(**self._pool.connection_kwargs)
            await conn.connect()
            link = self._link = _Link(conn, self._timeout)
            self._opening.set_result(link)
            return link
        except BaseException as exc:
            self._opening.set_exception(exc)
            self._opening.exception()  # retrieved: no "never retrieved" warning
            raise
        finally:
            self._opening = None

    async def execute(
        self, commands: Sequence[Command], *, wait: tuple[int, int] | None = None
    ) -> list[Any]:
        """Each command's reply, in order; an error reply is returned as its exception.
        A dropped connection raises (after the retries). ``wait`` (replicas, milliseconds):
        the batch ends with ``WAIT``, and fewer replicas than asked raise ``NotReplicated``."""
        if wait is not None:
            replies = await self.execute([*commands, ("WAIT", *wait)])
            check_replicas(replies.pop(), wait, "the Redis master")
            return replies
        packed = b"".join([hiredis.pack_command(command) for command in commands])

        async def attempt() -> list[Any]:
            link = await self._open()
            futures = link.send(packed, len(commands))
            replies = await asyncio.gather(*futures, return_exceptions=True)
            for reply in replies:  # the connection's failure, not a command's: raised
                if isinstance(reply, rx.ConnectionError | rx.TimeoutError):
                    raise reply
                if self._demotion_is_loss and isinstance(reply, rx.ReadOnlyError):
                    raise rx.ConnectionError(f"the master was demoted: {reply}")
            return replies

        async def failed(error: BaseException) -> None:
            link = self._link
            if link is not None and link.broken is None:
                link.fail(error)

        if self._retry is None:
            return await attempt()
        return list(await self._retry.call_with_retry(attempt, failed))

    async def call(self, *command: Any) -> Any:
        """One command's reply; an error reply raises."""
        link = self._link
        if link is None or link.broken is not None:
            link = await self._open()
        (future,) = link.send(hiredis.pack_command(command), 1)
        try:
            return await future
        except rx.ReadOnlyError:
            if not self._demotion_is_loss or self._retry is None:
                raise
            link.fail(rx.ConnectionError("the master was demoted"))
        except self._retried:
            if self._retry is None:
                raise
        # The connection is lost: once more on a new one, with the retries.
        (reply,) = await self.execute([command])
        if isinstance(reply, BaseException):
            raise reply from None
        return reply

    def drop(self, error: BaseException) -> None:
        """Give up the connection (a reply is still to come on it that nobody waits for,
        and would hold up the next command): what is in flight fails with ``error``."""
        if self._link is not None:
            self._link.fail(error)

    async def close(self) -> None:
        link, self._link = self._link, None
        if link is not None:
            await link.close()
