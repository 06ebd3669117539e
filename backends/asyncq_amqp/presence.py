"""Which workers still hold a connection to RabbitMQ.

A heartbeat says a worker was alive when it beat; a worker killed with SIGKILL stays listed
as live until three beats are missed (30 s by default). RabbitMQ knows sooner: it returns a
lost connection's deliveries the moment the connection closes. So each worker also declares
an exclusive queue, ``<prefix>.worker.<worker id>``, which RabbitMQ deletes with the
connection that declared it; whoever lists the workers asks whether each live one's queue
still exists. A passive declare of it answers: RESOURCE_LOCKED (another connection holds
it) or success (this one does) means connected, NOT_FOUND means gone.
"""

from __future__ import annotations

from collections.abc import Iterable

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractConnection

__all__ = ["Presence"]


class Presence:
    def __init__(self, prefix: str) -> None:
        self._prefix = prefix

    def name(self, worker_id: str) -> str:
        return f"{self._prefix}.worker.{worker_id}"

    async def announce(self, channel: AbstractChannel, worker_id: str) -> None:
        """Declare the worker's queue on its own connection (again after a reconnect: a
        declare of a queue this connection holds already is a no-op)."""
        await channel.declare_queue(
            self.name(worker_id), durable=False, exclusive=True, auto_delete=True
        )

    async def withdraw(self, channel: AbstractChannel, worker_id: str) -> None:
        await channel.queue_delete(self.name(worker_id))

    async def connected(
        self, connection: AbstractConnection, worker_ids: Iterable[str]
    ) -> set[str]:
        """The workers among ``worker_ids`` whose connection is still open."""
        found: set[str] = set()
        channel: aio_pika.abc.AbstractChannel | None = None
        try:
            for worker_id in worker_ids:
                # A refused passive declare closes its channel: each answer may need a new one.
                if channel is None or channel.is_closed:
                    channel = await connection.channel(publisher_confirms=False)
                try:
                    await channel.declare_queue(self.name(worker_id), passive=True)
                except aiormq.exceptions.ChannelLockedResource:
                    found.add(worker_id)  # exclusive to another connection: that one is open
                except aiormq.exceptions.ChannelNotFoundEntity:
                    continue
                else:
                    found.add(worker_id)
        finally:
            if channel is not None and not channel.is_closed:
                await channel.close()
        return found
