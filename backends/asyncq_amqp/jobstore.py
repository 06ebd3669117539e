"""The AMQP backend's JobStore: the records kept in the ``records=`` store, with RabbitMQ's
own word on which workers are connected."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

from asyncq.records import JobInfo, WorkerInfo
from asyncq.store import JobStore

if TYPE_CHECKING:
    from .backend import AmqpBackend

__all__ = ["AmqpJobStore"]


class AmqpJobStore(JobStore):
    def __init__(self, backend: AmqpBackend) -> None:
        self._backend = backend

    async def job_info(self, job_id: str, queue: str) -> JobInfo | None:
        return await self._backend.records.job_info(job_id, queue)

    async def wait_finished(self, job_id: str, queue: str, timeout: float | None) -> JobInfo | None:
        return await self._backend.records.wait_finished(job_id, queue, timeout)

    async def cancel(self, job_id: str, queue: str) -> bool:
        return await self._backend.records.cancel(job_id, queue)

    async def watch_cancellations(self, on_cancel: Callable[[str], None]) -> None:
        requests = self._backend._cancel_requests

        def note(job_id: str) -> None:
            # Remembered for a while, for a job admitted but not yet handed to the worker.
            now = time.monotonic()
            if len(requests) > 10_000:
                for old in [j for j, at in requests.items() if at < now - 60]:
                    del requests[old]
            requests[job_id] = now
            on_cancel(job_id)

        await self._backend.records.watch_cancellations(note)

    async def heartbeat(self, worker: WorkerInfo, ttl: float) -> None:
        with self._backend._errors("announcing a worker"):
            await self._backend._presence.announce(self._backend.publisher, worker.id)
        await self._backend.records.heartbeat(worker, ttl)

    async def deregister(self, worker_id: str) -> None:
        await self._backend.records.deregister(worker_id)
        with self._backend._errors("deregistering a worker"):
            await self._backend._presence.withdraw(self._backend.publisher, worker_id)

    async def workers(self, *, include_gone: bool = False) -> list[WorkerInfo]:
        """As the records list them, but a live-listed worker whose connection RabbitMQ
        has closed is gone now, not once its heartbeats run out (see presence.py)."""
        listed = await self._backend.records.workers(include_gone=include_gone)
        live = [w.id for w in listed if not w.gone]
        if not live:
            return listed
        with self._backend._errors("listing workers"):
            connected = await self._backend._presence.connected(self._backend.connection, live)
        found = []
        for worker in listed:
            if not worker.gone and worker.id not in connected:
                if not include_gone:
                    continue
                worker = replace(worker, gone=True)
            found.append(worker)
        return found
