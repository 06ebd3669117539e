"""One pub/sub connection shared by every coroutine of a backend that waits for a job.

A subscription per waiter would hold a pooled connection for as long as it waits: a web
server awaiting a few hundred results would drain the pool, and an in-process worker
could then not settle the very jobs they wait for. Here all waiters share one connection,
and whoever waits takes the reader's seat in turn: the seat holder reads notifications and
wakes their waiters, until its own arrives; meanwhile the others wait for theirs or for the
seat, whichever comes first. No background task is needed, so nothing outlives a waiter.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from asyncq.records import JobInfo

__all__ = ["Notifications", "listen"]

log = logging.getLogger("asyncq.redis")

_LISTEN = 5.0  # seconds a seat holder reads before it re-checks (a lost message costs this)
_FIRST_LOOK = 0.25
"""Seconds before a waiter's second look, doubling up to ``_LISTEN``: ``subscribe()`` sends
SUBSCRIBE without waiting for Redis to take it, so a finish published in the moment
between the first look and the subscription taking effect is missed; the early looks find
it within a fraction of a second instead of ``_LISTEN``."""


class Notifications:
    def __init__(self, source: Callable[[], aioredis.Redis]) -> None:
        """``source`` gives the client to subscribe through; on a cluster it names another
        master's once the one subscribed to has left (see ``RedisStore.listener``)."""
        self._source = source
        self._client = source()
        self._pubsub: Any = None
        self._waiters: dict[bytes, set[anyio.Event]] = {}
        self._seat = anyio.Lock()
        self._commands = anyio.Lock()

    async def wait(self, channel: str, done: Callable[[], Awaitable[bool]]) -> None:
        """Return once ``done()`` is true, checking it again on each notification on
        ``channel`` (and every few seconds, in case one was lost to a reconnect)."""
        key = channel.encode()
        waiters = self._waiters.setdefault(key, set())
        pubsub = self._connection()
        event = anyio.Event()
        waiters.add(event)
        try:
            if len(waiters) == 1:
                # Subscribed before the first look, so a finish in between is not missed.
                # One at a time: redis-py's PubSub takes a pool connection on first use, and
                # concurrent first uses would each take one and leak all but the last.
                async with self._commands:
                    await pubsub.subscribe(channel)
            look = _FIRST_LOOK
            while not await done():
                with anyio.move_on_after(look):
                    await self._until(event)
                look = min(look * 2, _LISTEN)
                waiters.discard(event)
                event = anyio.Event()
                waiters.add(event)
        finally:
            waiters.discard(event)
            if not waiters:
                del self._waiters[key]
                if self._pubsub is pubsub:  # not closed meanwhile
                    with anyio.CancelScope(shield=True):
                        async with self._commands:
                            await pubsub.unsubscribe(channel)

    async def wait_finished(
        self, channel: str, read: Callable[[], Awaitable[JobInfo | None]]
    ) -> JobInfo | None:
        """Wait until the job that ``read`` reads is finished (or unknown); its record.
        ``channel`` is where its finish is announced."""
        info: JobInfo | None = None

        async def finished() -> bool:
            nonlocal info
            info = await read()
            return info is None or info.status.finished

        await self.wait(channel, finished)
        return info

    async def close(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            await pubsub.aclose()

    def _connection(self) -> Any:
        if self._pubsub is None:
            self._pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        return self._pubsub

    async def _until(self, event: anyio.Event) -> None:
        """Wait until ``event`` is set, reading notifications whenever the seat is free."""
        failed: list[Exception] = []
        async with anyio.create_task_group() as tg:

            async def woken() -> None:
                await event.wait()
                tg.cancel_scope.cancel()

            async def read() -> None:
                async with self._seat:
                    while not event.is_set():
                        try:
                            message = await self._connection().get_message(timeout=_LISTEN)
                        except (RedisError, OSError) as exc:  # raised below, not as a group
                            if await self._moved():
                                continue
                            failed.append(exc)
                            break
                        if message is not None:
                            self._wake(message["channel"])
                tg.cancel_scope.cancel()

            tg.start_soon(woken)
            tg.start_soon(read)
        if failed:
            raise failed[0]

    async def _moved(self) -> bool:
        """After a failed read: whether the source now names another server (a cluster's
        master replaced), in which case every waiter's channel is subscribed there."""
        client = self._source()
        if client is self._client:
            return False
        old, self._client, self._pubsub = self._pubsub, client, None
        with anyio.CancelScope(shield=True):
            if old is not None:
                await old.aclose()
            async with self._commands:
                channels = list(self._waiters)
                if channels:
                    await self._connection().subscribe(*channels)
        return True

    def _wake(self, channel: bytes) -> None:
        for event in self._waiters.get(channel, ()):
            event.set()


async def listen(
    source: Callable[[], aioredis.Redis], channel: str, on_message: Callable[[str], None]
) -> None:
    """Call ``on_message`` with each message on ``channel``, until cancelled; a lost
    connection is resubscribed a second later (what was published meanwhile is missed),
    through the client ``source`` gives then."""
    while True:
        pubsub = source().pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(channel)
            while True:
                # Each wait with a timeout of its own: before redis-py 8, listen() and
                # get_message(timeout=None) fail once the socket timeout passes in silence.
                message = await pubsub.get_message(timeout=_LISTEN)
                if message is not None and message.get("type") == "message":
                    on_message(message["data"].decode())
        except (RedisError, OSError) as exc:
            log.warning("lost Redis listening on %s, resubscribing in 1 s: %s", channel, exc)
            await anyio.sleep(1.0)
        finally:
            with anyio.CancelScope(shield=True):
                await pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]  # typed from redis 8
