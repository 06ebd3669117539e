"""The job records of a ``memory://`` broker: status, results, cancellation, heartbeats."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime

import anyio

from .memory_broker import MemoryBroker
from .records import (
    GONE_RETENTION,
    ConcurrencyRequest,
    JobInfo,
    JobStatus,
    Permit,
    Progress,
    RateRequest,
    ScheduleState,
    WorkerInfo,
)
from .store import JobStore

__all__ = ["MemoryStore"]


class MemoryStore(JobStore):
    """The records of one :class:`~asyncq.memory_broker.MemoryBroker`."""

    keeps_bodies = True

    def __init__(self, broker: MemoryBroker, result_ttl: float) -> None:
        self._broker = broker
        self._result_ttl = result_ttl

    async def job_info(self, job_id: str, queue: str) -> JobInfo | None:
        self._broker.expire(time.time(), self._result_ttl)
        job = self._broker.job(job_id, queue)
        if job is None:
            return None
        return JobInfo(
            id=job.id,
            status=job.status,
            task=job.task,
            queue=job.queue,
            attempt=job.attempt,
            eta=job.eta,
            raw_result=job.result,
            error=job.error,
            updated_at=job.updated_at,
            progress=job.progress,
            snoozes=job.snoozes,
        )

    async def job_body(self, job_id: str, queue: str) -> bytes | None:
        job = self._broker.job(job_id, queue)
        return None if job is None or job.status.finished else job.body

    async def set_progress(self, job_id: str, queue: str, progress: Progress) -> None:
        job = self._broker.job(job_id, queue)
        if job is not None:
            job.progress = progress

    async def wait_finished(self, job_id: str, queue: str, timeout: float | None) -> JobInfo | None:
        broker = self._broker
        job = broker.job(job_id, queue)
        if job is not None and not job.status.finished:
            event = broker.finished.get(job_id)
            if event is None:
                event = broker.finished[job_id] = anyio.Event()
            with anyio.fail_after(timeout):
                await event.wait()
        return await self.job_info(job_id, queue)

    async def cancel(self, job_id: str, queue: str) -> bool:
        broker = self._broker
        job = broker.job(job_id, queue)
        if job is None or job.status.finished:
            return False
        now = time.time()
        q = broker.queue(job.queue)
        if job.status is JobStatus.RUNNING:
            # The worker holding it cancels its scope and settles it as CANCELLED; the flag
            # covers a worker that is gone and will never settle it.
            job.cancel_requested = True
            for watcher in list(broker.cancel_watchers):
                watcher(job_id)
            return True
        if job.status is JobStatus.QUEUED and job_id not in q.deferred_ids:
            q.ready.remove(job)
        q.scheduled_ids.discard(job_id)  # its heap entry is skipped when it comes due
        q.deferred_ids.discard(job_id)
        job.status, job.eta, job.updated_at = JobStatus.CANCELLED, None, now
        broker.finish(job, now, self._result_ttl)
        return True

    async def watch_cancellations(self, on_cancel: Callable[[str], None]) -> None:
        watchers = self._broker.cancel_watchers
        watchers.append(on_cancel)
        try:
            await anyio.sleep_forever()
        finally:
            watchers.remove(on_cancel)

    async def heartbeat(self, worker: WorkerInfo, ttl: float) -> None:
        now = time.time()
        self._broker.workers[worker.id] = (replace(worker, last_seen=now), now + ttl)

    async def deregister(self, worker_id: str) -> None:
        self._broker.workers.pop(worker_id, None)

    async def workers(self, *, include_gone: bool = False) -> list[WorkerInfo]:
        now = time.time()
        known = self._broker.workers
        for worker_id in [
            w for w, (_, expires) in known.items() if expires + GONE_RETENTION <= now
        ]:
            del known[worker_id]
        found = [
            info if expires > now else replace(info, gone=True) for info, expires in known.values()
        ]
        return [w for w in found if include_gone or not w.gone]

    async def claim_slot(self, schedule: str, slot: datetime, ttl: float, job_id: str = "") -> bool:
        claims, now = self._broker.slot_claims, time.time()
        for claim in [c for c, (until, _) in claims.items() if until <= now]:
            del claims[claim]
        claim = (schedule, round(slot.timestamp() * 1000))
        if claim in claims:
            return False
        claims[claim] = (now + ttl, job_id)
        return True

    async def schedule_state(self, schedule: str) -> ScheduleState:
        now = time.time()
        slots = [
            (ms, job_id)
            for (name, ms), (until, job_id) in self._broker.slot_claims.items()
            if name == schedule and until > now
        ]
        paused = schedule in self._broker.paused_schedules
        if not slots:
            return ScheduleState(paused=paused)
        ms, job_id = max(slots)
        return ScheduleState(datetime.fromtimestamp(ms / 1000, UTC), job_id or None, paused)

    async def take_rate_permits(self, requests: Sequence[RateRequest]) -> list[float]:
        return self._broker.limits.take_rate(requests)

    async def take_concurrency_permits(self, requests: Sequence[ConcurrencyRequest]) -> list[float]:
        return self._broker.limits.take_concurrency(requests)

    async def take_order_tickets(self, keys: Sequence[str]) -> list[int]:
        return self._broker.limits.take_tickets(keys)

    async def void_order_tickets(self, tickets: Sequence[tuple[str, int]]) -> None:
        self._broker.limits.void_tickets(tickets)

    async def renew_concurrency_permits(self, permits: Sequence[Permit], lease: float) -> None:
        self._broker.limits.renew_concurrency(permits, lease)

    async def release_concurrency_permits(
        self, permits: Sequence[Permit], held_for: Sequence[float]
    ) -> None:
        self._broker.limits.release_concurrency(permits, held_for)

    async def pause_schedule(self, schedule: str, paused: bool) -> None:
        if paused:
            self._broker.paused_schedules.add(schedule)
        else:
            self._broker.paused_schedules.discard(schedule)
