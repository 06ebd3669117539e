"""The Redis that keeps asyncq's state under one prefix, as one ``RedisStore``: a client with
asyncq's scripts loaded and run in batches, driver errors mapped to asyncq's, the wake-ups
of jobs that finish, and the names of the registry of queues and the cancellation channel.
The Redis backend keeps everything there; a record store (the AMQP backend's) keeps its
job records there."""

from __future__ import annotations

import os
import socket
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, TypeVar

import anyio
import redis.asyncio as aioredis
from redis import exceptions as rx

from asyncq.backend import redact_url
from asyncq.delivery import Envelope
from asyncq.errors import BrokerError
from asyncq.records import JobInfo

from ..connection import (
    is_cluster,
    node_client,
    node_name,
    open_client,
    open_wire,
    primary_names,
    redis_errors,
)
from ..notifications import Notifications
from ..refusals import refused_url
from ..settings import RedisConnection
from ..wire import Calls
from .keys import QueueKeys
from .scripting import Call, Scripts, enqueue_chunks

__all__ = ["DEFAULT_BULK_LIMIT", "RedisStore"]

T = TypeVar("T")

DEFAULT_BULK_LIMIT = 512 * 1024 * 1024
"""Redis's default ``proto-max-bulk-len``: the largest string argument of a command."""


class RedisStore:
    """One Redis under one prefix, with the scripts of whoever uses it (by name)."""

    def __init__(
        self,
        connection: str | RedisConnection,
        *,
        prefix: str,
        scripts: Mapping[str, str],
        max_connections: int,
        owner: str,
    ) -> None:
        """``connection`` is a URL, which may carry the connection options
        (``socket_timeout``, ``socket_connect_timeout``, ``retry_on_timeout``), or a
        ``RedisConnection``; ``owner`` names what uses the store in errors ("the Redis
        backend")."""
        if isinstance(connection, str):
            connection = RedisConnection.from_url(connection)
        self.connection = connection
        self.where = redact_url(connection.url)
        self.queues_key = f"{prefix}:queues"
        self.cancel_channel = f"{prefix}:cancel"
        self._max_connections = max_connections
        self._owner = owner
        # Every connection of this process's store carries this name, so whoever lists
        # the workers can tell from CLIENT LIST whether a worker's process still holds a
        # connection: a killed one holds none the moment its sockets close.
        host = "".join(c if c.isalnum() or c in ".-_" else "_" for c in socket.gethostname())
        self.client_name = f"asyncq:{host}:{os.getpid()}:{os.urandom(3).hex()}"
        self._client: aioredis.Redis | None = None
        self._wire: Calls | None = None
        self._listener: aioredis.Redis | None = None
        self._listener_node = ""
        self._listeners_left: list[aioredis.Redis] = []
        self._notifications: Notifications | None = None
        self._scripts = Scripts(scripts)
        self._registered: set[str] = set()  # queues this store has put in the registry

    async def connect(self, action: str = "connecting") -> None:
        self._client = open_client(
            self.connection, max_connections=self._max_connections, client_name=self.client_name
        )
        self._wire = open_wire(self._client)
        with self.errors(action):
            try:
                await self._client.ping()
            except rx.RedisError as exc:
                # The first command is where a wrong password or db shows: say so.
                refused = await refused_url(self.connection, self.where, exc)
                if refused is not None:
                    raise refused from None
                raise
            await self._scripts.load(self._wire)
            if self.cluster:
                # The subscriptions' node gets its connection now, as the single-server
                # client has one: a worker's first subscription is then as quick there.
                await self.listener.ping()
        self._notifications = Notifications(lambda: self.listener)

    async def bulk_limit(self) -> int:
        """The largest string the server takes in a command (``proto-max-bulk-len``), or
        Redis's default where CONFIG is refused (managed services often rename it)."""
        try:
            reply: Any = await self.client.config_get("proto-max-bulk-len")
        except rx.RedisError:
            return DEFAULT_BULK_LIMIT
        value = reply.get("proto-max-bulk-len") or reply.get(b"proto-max-bulk-len")
        try:
            return int(value)
        except (TypeError, ValueError):
            return DEFAULT_BULK_LIMIT

    async def close(self) -> None:
        client, self._client = self._client, None
        notifications, self._notifications = self._notifications, None
        wire, self._wire = self._wire, None
        listener, self._listener = self._listener, None
        left, self._listeners_left = self._listeners_left, []
        if listener is not None and listener is not client:
            left.append(listener)
        # Each part is closed even if one before it fails (a connection error, a
        # cancellation): a client left open leaks its sockets.
        try:
            if wire is not None:
                await wire.close()
            if notifications is not None:
                await notifications.close()
            for node in left:
                await node.aclose(close_connection_pool=True)
        finally:
            with anyio.CancelScope(shield=True):
                await self._close_client(client)

    @staticmethod
    async def _close_client(client: aioredis.Redis | None) -> None:
        if client is not None:
            if is_cluster(client):
                await client.aclose()  # its nodes' pools are its own
            else:
                await client.aclose(close_connection_pool=True)  # the pool was made here
                # Behind Sentinel, the clients that asked the sentinels go too.
                manager = getattr(client.connection_pool, "sentinel_manager", None)
                for sentinel in getattr(manager, "sentinels", ()):
                    await sentinel.aclose()

    @property
    def client(self) -> aioredis.Redis:
        if self._client is None:
            raise BrokerError(f"{self._owner} is not connected: open the App first")
        return self._client

    @property
    def cluster(self) -> bool:
        """Whether this is a Redis Cluster (``?cluster=true``)."""
        return self.connection.cluster

    @property
    def listener(self) -> aioredis.Redis:
        """The client subscriptions go through: the client itself, or on a cluster one of its
        masters' (where a PUBLISH on any node reaches every subscriber)."""
        client = self.client
        if not is_cluster(client):
            return client
        if self._listener is None or self._listener_node not in primary_names(client):
            if self._listener is not None:
                self._listeners_left.append(self._listener)  # closed with the store
            self._listener = node_client(client)
            self._listener_node = node_name(self._listener)
        return self._listener

    def node_of(self, key: str) -> aioredis.Redis:
        """A client of the server that holds ``key``: the client itself, or on a cluster a
        client of the master of its slot (closed by the caller)."""
        return node_client(self.client, key) if is_cluster(self.client) else self.client

    @property
    def wire(self) -> Calls:
        """The connection of the scripts and other hot commands (see wire.py)."""
        if self._wire is None:
            raise BrokerError(f"{self._owner} is not connected: open the App first")
        return self._wire

    def errors(self, action: str) -> AbstractContextManager[None]:
        """Map redis-py's errors to asyncq's, saying what was being done."""
        return redis_errors(self.where, action)

    async def run(
        self,
        calls: Sequence[Call],
        *,
        queues: Sequence[str] = (),
        wait: tuple[int, int] | None = None,
    ) -> list[Any]:
        """Run scripts in one round trip. Of ``queues`` (those the calls are for), the ones
        this store has not registered yet join the registry of queues in the same trip.
        ``wait`` (replicas, milliseconds): the trip ends with ``WAIT`` for them."""
        new = [q for q in queues if q not in self._registered]
        register = (self.queues_key, list(dict.fromkeys(new))) if new else None
        replies = await self._scripts.run(self.wire, calls, register=register, wait=wait)
        self._registered.update(new)
        return replies

    async def run_chunked(
        self,
        envelopes: Sequence[Envelope],
        keys: Callable[[str], QueueKeys],
        call: Callable[[QueueKeys, Sequence[Envelope]], Call],
        reply: Callable[[Any], T],
        *,
        by_priority: bool = False,
        wait: tuple[int, int] | None = None,
    ) -> list[T]:
        """Run one script call per queue (and, ``by_priority``, per priority) and
        SCRIPT_CHUNK envelopes (``call`` builds it from the queue's keys and those
        envelopes), all in one round trip that registers their queues; each envelope's
        reply, converted by ``reply``, in their order."""
        chunks, places = enqueue_chunks(envelopes, keys, by_priority=by_priority)
        calls = [call(queue_keys, jobs) for queue_keys, jobs in chunks]
        queues = [queue_keys.queue for queue_keys, _ in chunks]
        replies = await self.run(calls, queues=queues, wait=wait)
        values = [reply(value) for replied in replies for value in replied]
        if places is None:
            return values
        ordered = values.copy()
        for i, value in zip(places, values, strict=True):
            ordered[i] = value
        return ordered

    async def register(self, queues: Sequence[str]) -> None:
        """Put ``queues`` in the registry of queues, unless this store did already."""
        new = [q for q in dict.fromkeys(queues) if q not in self._registered]
        if new:
            await self.client.sadd(self.queues_key, *new)
            self._registered.update(new)

    async def unregister(self, queue: str, *doomed: str) -> None:
        """Take ``queue`` out of the registry of queues, and delete the keys ``doomed`` in
        the same step."""
        if self.cluster:
            # The queue's keys and the registry are in different slots: no MULTI spans them.
            # Out of the registry first, so a listing never shows a queue without its keys.
            await self.client.srem(self.queues_key, queue)
            if doomed:
                await self.client.delete(*doomed)
        else:
            async with self.client.pipeline(transaction=True) as pipe:
                if doomed:
                    pipe.delete(*doomed)
                pipe.srem(self.queues_key, queue)
                await pipe.execute()
        self._registered.discard(queue)

    async def registered(self) -> list[str]:
        """The registry of queues, by name: every queue jobs were enqueued to or fetched from
        and that was not removed since."""
        members: Any = await self.client.smembers(self.queues_key)
        return sorted(m.decode() for m in members)

    async def wait_finished(
        self, channel: str, read: Callable[[], Awaitable[JobInfo | None]], timeout: float | None
    ) -> JobInfo | None:
        """Wait for a job's end (announced on ``channel``); ``read`` gives its record."""
        if self._notifications is None:
            raise BrokerError(f"{self._owner} is not connected: open the App first")
        # The deadline outside the error mapping: its TimeoutError is the caller's answer.
        with anyio.fail_after(timeout), self.errors("waiting for a job"):
            return await self._notifications.wait_finished(channel, read)
