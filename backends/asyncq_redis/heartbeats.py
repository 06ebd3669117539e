"""Worker heartbeats on Redis: one key per worker, holding its info as JSON. Used by the
Redis backend and by the AMQP backend's record store alike.

Each heartbeat sets the key to expire ``ttl + GONE_RETENTION`` from now. While more than
``GONE_RETENTION`` of that is left, the worker is live; after that it is gone (it missed its
heartbeats, and did not deregister as a stopping worker does), and it stays listed as gone
until the key expires. Liveness is read from the key's own TTL, on Redis's clock, so clocks
that disagree between the workers and whoever lists them do not matter.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import redis.asyncio as aioredis

from asyncq.records import GONE_RETENTION, WorkerInfo

from . import codec

__all__ = ["Heartbeats"]

_RETENTION_MS = int(GONE_RETENTION * 1000)


class Heartbeats:
    def __init__(self, prefix: str) -> None:
        self._prefix = f"{prefix}:worker:"

    async def beat(self, client: aioredis.Redis, worker: WorkerInfo, ttl: float) -> None:
        info = codec.worker_to_json(worker)
        await client.set(self._prefix + worker.id, info, px=max(int(ttl * 1000), 1) + _RETENTION_MS)

    async def remove(self, client: aioredis.Redis, worker_id: str) -> None:
        await client.delete(self._prefix + worker_id)

    async def known(self, client: aioredis.Redis, *, include_gone: bool) -> list[WorkerInfo]:
        """Live workers (and, with ``include_gone``, the gone ones), oldest first."""
        names = [n async for n in client.scan_iter(self._prefix + "*", 1000)]
        if not names:
            return []
        async with client.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.get(name)
                pipe.pttl(name)
            replies: list[Any] = await pipe.execute()
        found = []
        for raw, ttl_ms in zip(replies[::2], replies[1::2], strict=True):
            if raw is None:  # expired between the scan and the read
                continue
            worker = codec.worker_from_json(raw)
            if 0 <= ttl_ms <= _RETENTION_MS:
                if not include_gone:
                    continue
                worker = replace(worker, gone=True)
            found.append(worker)
        return sorted(found, key=lambda w: w.started_at)
