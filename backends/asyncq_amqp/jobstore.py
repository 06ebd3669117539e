"""The AMQP backend's JobStore: the records kept in the ``records=`` store, with RabbitMQ's
own word on which workers are connected. Without ``records=`` the backend's store is a
:class:`~asyncq.store.MissingStore` that says to add it (:func:`missing_store`)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING

from asyncq.records import (
    ConcurrencyRequest,
    JobInfo,
    Permit,
    Progress,
    RateRequest,
    ScheduleState,
    WorkerInfo,
)
from asyncq.store import JobStore, MissingStore

from .connection import Link
from .presence import Presence
from .settings import RECORDS_HINT

if TYPE_CHECKING:
    from .record_store import JobRecords

__all__ = ["AmqpJobStore", "CancelRequests", "missing_store"]


class CancelRequests:
    """The jobs whose cancellation this process heard of lately: a job admitted before the
    request came and not yet handed to the worker is cancelled at the hand-over instead."""

    _KEEP = 60.0  # seconds, far longer than a delivery waits between admission and hand-over

    def __init__(self) -> None:
        self._heard: dict[str, float] = {}

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._heard

    def add(self, job_id: str) -> None:
        now = time.monotonic()
        if len(self._heard) > 10_000:
            for old in [j for j, at in self._heard.items() if at < now - self._KEEP]:
                del self._heard[old]
        self._heard[job_id] = now


class AmqpJobStore(JobStore):
    def __init__(
        self, records: JobRecords, link: Link, presence: Presence, heard: CancelRequests
    ) -> None:
        self._records = records
        self._link = link
        self._presence = presence
        self._heard = heard

    async def job_info(self, job_id: str, queue: str) -> JobInfo | None:
        return await self._records.job_info(job_id, queue)

    async def wait_finished(self, job_id: str, queue: str, timeout: float | None) -> JobInfo | None:
        return await self._records.wait_finished(job_id, queue, timeout)

    async def cancel(self, job_id: str, queue: str) -> bool:
        return await self._records.cancel(job_id, queue)

    async def watch_cancellations(self, on_cancel: Callable[[str], None]) -> None:
        def note(job_id: str) -> None:
            self._heard.add(job_id)
            on_cancel(job_id)

        await self._records.watch_cancellations(note)

    async def heartbeat(self, worker: WorkerInfo, ttl: float) -> None:
        with self._link.errors("announcing a worker"):
            await self._presence.announce(self._link.publisher, worker.id)
        await self._records.heartbeat(worker, ttl)

    async def deregister(self, worker_id: str) -> None:
        await self._records.deregister(worker_id)
        with self._link.errors("deregistering a worker"):
            await self._presence.withdraw(self._link.publisher, worker_id)

    async def set_progress(self, job_id: str, queue: str, progress: Progress) -> None:
        await self._records.set_progress(job_id, queue, progress)

    async def claim_slot(self, schedule: str, slot: datetime, ttl: float, job_id: str = "") -> bool:
        return await self._records.claim_slot(schedule, slot, ttl, job_id)

    async def schedule_state(self, schedule: str) -> ScheduleState:
        return await self._records.schedule_state(schedule)

    async def take_rate_permits(self, requests: Sequence[RateRequest]) -> list[float]:
        return await self._records.take_rate_permits(requests)

    async def take_concurrency_permits(self, requests: Sequence[ConcurrencyRequest]) -> list[float]:
        return await self._records.take_concurrency_permits(requests)

    async def take_order_tickets(self, keys: Sequence[str]) -> list[int]:
        return await self._records.take_order_tickets(keys)

    async def void_order_tickets(self, tickets: Sequence[tuple[str, int]]) -> None:
        await self._records.void_order_tickets(tickets)

    async def renew_concurrency_permits(self, permits: Sequence[Permit], lease: float) -> None:
        await self._records.renew_concurrency_permits(permits, lease)

    async def release_concurrency_permits(
        self, permits: Sequence[Permit], held_for: Sequence[float]
    ) -> None:
        await self._records.release_concurrency_permits(permits, held_for)

    async def pause_schedule(self, schedule: str, paused: bool) -> None:
        await self._records.pause_schedule(schedule, paused)

    async def workers(self, *, include_gone: bool = False) -> list[WorkerInfo]:
        """As the records list them, but a live-listed worker whose connection RabbitMQ
        has closed is gone now, not once its heartbeats run out (see presence.py)."""
        listed = await self._records.workers(include_gone=include_gone)
        live = [w.id for w in listed if not w.gone]
        if not live:
            return listed
        with self._link.errors("listing workers"):
            connected = await self._presence.connected(self._link.connection, live)
        found = []
        for worker in listed:
            if not worker.gone and worker.id not in connected:
                if not include_gone:
                    continue
                worker = replace(worker, gone=True)
            found.append(worker)
        return found


def missing_store() -> MissingStore:
    """The store of an AMQP backend without ``records=``."""
    return MissingStore(RECORDS_HINT)
