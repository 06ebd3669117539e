"""The Redis that keeps asyncq's state under one prefix: a client with asyncq's scripts
loaded, the wake-ups of jobs that finish, the registry of queues, the cancellation channel
and the workers' heartbeats. The Redis backend keeps everything there; the AMQP backend
keeps its job records there. Each goes through one ``RedisStore``."""

from __future__ import annotations

import os
import socket
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import replace
from typing import Any

import anyio
import redis.asyncio as aioredis
from redis import exceptions as rx

from asyncq.backend import redact_url
from asyncq.errors import BrokerError
from asyncq.records import JobInfo, WorkerInfo

from .connection import open_client, redis_errors
from .heartbeats import Heartbeats
from .notifications import Notifications, listen
from .refusals import refused_url
from .scripting import Call, Scripts
from .settings import RedisConnection

__all__ = ["DEFAULT_BULK_LIMIT", "RedisStore"]

CLIENT_NAME = "redis_client"
"""The key in a heartbeat's ``extra`` naming the connections of the worker's process."""

DEFAULT_BULK_LIMIT = 512 * 1024 * 1024
"""Redis's default ``proto-max-bulk-len``: the largest string argument of a command."""


class RedisStore:
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
        self._notifications: Notifications | None = None
        self._scripts = Scripts(scripts)
        self._heartbeats = Heartbeats(prefix)

    async def connect(self, action: str = "connecting") -> None:
        self._client = open_client(
            self.connection, max_connections=self._max_connections, client_name=self.client_name
        )
        self._notifications = Notifications(self._client)
        with self.errors(action):
            try:
                await self._client.ping()
            except rx.RedisError as exc:
                # The first command is where a wrong password or db shows: say so.
                refused = await refused_url(self.connection, self.where, exc)
                if refused is not None:
                    raise refused from None
                raise
            await self._scripts.load(self._client)

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
        if notifications is not None:
            await notifications.close()
        if client is not None:
            await client.aclose(close_connection_pool=True)  # the pool was made here

    @property
    def client(self) -> aioredis.Redis:
        if self._client is None:
            raise BrokerError(f"{self._owner} is not connected: open the App first")
        return self._client

    def errors(self, action: str) -> AbstractContextManager[None]:
        """Map redis-py's errors to asyncq's, saying what was being done."""
        return redis_errors(self.where, action)

    async def run(self, calls: Sequence[Call], *, new_queues: Sequence[str] = ()) -> list[Any]:
        """Run scripts in one round trip; ``new_queues`` join the registry of queues in it."""
        register = (self.queues_key, new_queues) if new_queues else None
        return await self._scripts.run(self.client, calls, register=register)

    async def wait_finished(
        self, channel: str, read: Callable[[], Awaitable[JobInfo | None]], timeout: float | None
    ) -> JobInfo | None:
        """Wait for a job's end (announced on ``channel``); ``read`` gives its record."""
        if self._notifications is None:
            raise BrokerError(f"{self._owner} is not connected: open the App first")
        # The deadline outside the error mapping: its TimeoutError is the caller's answer.
        with anyio.fail_after(timeout), self.errors("waiting for a job"):
            return await self._notifications.wait_finished(channel, read)

    async def watch_cancellations(self, on_cancel: Callable[[str], None]) -> None:
        await listen(self.client, self.cancel_channel, on_cancel)

    # -- heartbeats ------------------------------------------------------------------------
    async def heartbeat(self, worker: WorkerInfo, ttl: float) -> None:
        worker = replace(worker, extra={**worker.extra, CLIENT_NAME: self.client_name})
        with self.errors("sending a heartbeat"):
            await self._heartbeats.beat(self.client, worker, ttl)

    async def deregister(self, worker_id: str) -> None:
        with self.errors("deregistering a worker"):
            await self._heartbeats.remove(self.client, worker_id)

    async def workers(self, *, include_gone: bool = False) -> list[WorkerInfo]:
        """As the heartbeats say, except that a live one whose process holds no connection
        to Redis any more (killed, its host lost) is gone at once, not after three beats."""
        with self.errors("listing workers"):
            listed = await self._heartbeats.known(self.client, include_gone=True)
            connected = await self._connected_names() if any(not w.gone for w in listed) else None
        found = []
        for worker in listed:
            name = worker.extra.get(CLIENT_NAME)
            if not worker.gone and connected is not None and name and name not in connected:
                worker = replace(worker, gone=True)
            if include_gone or not worker.gone:
                found.append(worker)
        return found

    async def _connected_names(self) -> set[str] | None:
        """The names of the server's open connections; None where CLIENT LIST is refused
        (an ACL, a managed service), and then the heartbeats alone decide."""
        try:
            clients: Any = await self.client.client_list()
        except rx.ResponseError:
            return None
        return {str(c.get("name", "")) for c in clients}
