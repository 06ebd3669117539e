"""The Redis backend's JobStore: job records, cancellation and heartbeats, on the same Redis
(and the same queue keys) as the streams."""

from __future__ import annotations

import time
from collections.abc import Callable

from asyncq.records import JobInfo, WorkerInfo
from asyncq.store import JobStore

from . import codec
from .settings import QueueKeys
from .store import RedisStore

__all__ = ["GROUP", "RedisJobStore"]

GROUP = "asyncq"
"""The consumer group of every queue's stream."""


class RedisJobStore(JobStore):
    def __init__(self, store: RedisStore, keys: Callable[[str], QueueKeys], ttl_ms: int) -> None:
        self._store = store
        self._keys = keys
        self._ttl_ms = ttl_ms

    async def job_info(self, job_id: str, queue: str) -> JobInfo | None:
        keys = self._keys(queue)
        with self._store.errors("reading a job"):
            (flat,) = await self._store.run([("INFO", [keys.stream], [GROUP, keys.job(job_id)])])
        return codec.job_info(job_id, queue, flat)

    async def wait_finished(self, job_id: str, queue: str, timeout: float | None) -> JobInfo | None:
        channel = self._keys(queue).done_prefix + job_id
        return await self._store.wait_finished(
            channel, lambda: self.job_info(job_id, queue), timeout
        )

    async def cancel(self, job_id: str, queue: str) -> bool:
        keys = self._keys(queue)
        channel = self._store.cancel_channel
        args = [keys.base, job_id, repr(time.time()), self._ttl_ms, channel, GROUP]
        with self._store.errors("cancelling a job"):
            (reply,) = await self._store.run([("CANCEL", [keys.stream, keys.scheduled], args)])
        return bool(reply)

    async def watch_cancellations(self, on_cancel: Callable[[str], None]) -> None:
        await self._store.watch_cancellations(on_cancel)

    async def heartbeat(self, worker: WorkerInfo, ttl: float) -> None:
        await self._store.heartbeat(worker, ttl)

    async def deregister(self, worker_id: str) -> None:
        await self._store.deregister(worker_id)

    async def workers(self, *, include_gone: bool = False) -> list[WorkerInfo]:
        return await self._store.workers(include_gone=include_gone)
