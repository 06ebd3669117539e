"""Worker heartbeats on Redis: one key per worker, holding its info as JSON, that expires
unless the worker refreshes it. Used by the Redis backend and by the AMQP backend's
record store alike."""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

from asyncq.records import WorkerInfo

from . import codec

__all__ = ["Heartbeats"]


class Heartbeats:
    def __init__(self, prefix: str) -> None:
        self._prefix = f"{prefix}:worker:"

    async def beat(self, client: aioredis.Redis, worker: WorkerInfo, ttl: float) -> None:
        info = codec.worker_to_json(worker)
        await client.set(self._prefix + worker.id, info, px=max(int(ttl * 1000), 1))

    async def remove(self, client: aioredis.Redis, worker_id: str) -> None:
        await client.delete(self._prefix + worker_id)

    async def live(self, client: aioredis.Redis) -> list[WorkerInfo]:
        """Workers whose last heartbeat has not expired, oldest first."""
        names = [n async for n in client.scan_iter(self._prefix + "*", 1000)]
        values: Any = await client.mget(names) if names else []
        found = [codec.worker_from_json(raw) for raw in values if raw is not None]
        return sorted(found, key=lambda w: w.started_at)
