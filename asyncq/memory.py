"""The in-memory backend: the whole contract inside one process, with no dependencies.

For tests and for embedding (a FastAPI app running its own worker). ``memory://`` URLs with
the same name share one broker per process, so a producer App and a worker App built from
``memory://shop`` see the same queues; pick a distinct name per test to keep tests apart.
Nothing survives the process.

Options (URL query): ``visibility_timeout`` (seconds, default 30): how long a delivered,
unsettled job waits for its worker's lease renewal before it is delivered again;
``result_ttl`` (seconds, default 86400): how long finished jobs' records and results stay;
``max_message_size`` (bytes, default none): refuse larger jobs at enqueue, as a networked
broker would.

Every operation runs synchronously between awaits, so each is atomic with respect to the
others: the event loop is the lock.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Self
from urllib.parse import urlsplit

import anyio

from .backend import (
    Backend,
    Delivery,
    Envelope,
    Outcome,
    Settlement,
    parse_url_options,
    positive_float,
    positive_int,
)
from .errors import ErrorInfo
from .records import GONE_RETENTION, DeadLetter, JobInfo, JobStatus, QueueStats, WorkerInfo

__all__ = ["MemoryBackend"]


@dataclass(slots=True)
class _Job:
    id: str
    queue: str
    task: str
    body: bytes
    key: str | None
    status: JobStatus
    eta: float | None = None
    attempt: int = 1
    result: bytes | None = None
    error: ErrorInfo | None = None
    updated_at: float = 0.0
    receipt: int = 0
    """Which delivery currently holds the job; a stale worker's settlement is ignored."""
    lease_until: float = 0.0
    redelivered: bool = False
    cancel_requested: bool = False
    ttl: float | None = None
    """How long its record is kept once finished, when its task says (else result_ttl)."""


@dataclass(slots=True)
class _Queue:
    ready: deque[str] = field(default_factory=deque)
    scheduled: list[tuple[float, int, str]] = field(default_factory=list)
    scheduled_ids: set[str] = field(default_factory=set)
    running: set[str] = field(default_factory=set)
    dead: dict[str, DeadLetter] = field(default_factory=dict)


class _Broker:
    """The state one ``memory://name`` URL names, shared by every backend built from it."""

    def __init__(self) -> None:
        self.jobs: dict[str, _Job] = {}
        self.keys: dict[tuple[str, str], str] = {}
        """(queue, idempotency key) -> job id."""
        self.queues: dict[str, _Queue] = {}
        self.expiries: list[tuple[float, str]] = []
        """A heap of (when, job id): finished records to drop."""
        self.finished: dict[str, anyio.Event] = {}
        self.cancel_watchers: list[Callable[[str], None]] = []
        self.workers: dict[str, tuple[WorkerInfo, float]] = {}
        self.receipts = itertools.count(1)
        self.sequence = itertools.count()
        self.changed: anyio.Event | None = None

    def queue(self, name: str) -> _Queue:
        q = self.queues.get(name)
        if q is None:
            q = self.queues[name] = _Queue()
        return q

    def notify(self) -> None:
        if self.changed is not None:
            self.changed.set()
            self.changed = None


_BROKERS: dict[str, _Broker] = {}


class MemoryBackend(Backend):
    """All of asyncq's semantics, in this process's memory."""

    system = "memory"
    in_process = True

    def __init__(
        self,
        name: str = "",
        *,
        visibility_timeout: float = 30.0,
        result_ttl: float = 86400.0,
        max_message_size: int | None = None,
    ) -> None:
        self.name = name
        # No limit of its own; a test can set a production broker's, to catch oversized
        # jobs before they reach one.
        self.max_message_size = max_message_size
        self.visibility_timeout = visibility_timeout
        self.result_ttl = result_ttl
        self.lease_renewal_interval = visibility_timeout / 3
        self._broker = _BROKERS.setdefault(name, _Broker())
        self._turn = 0

    @classmethod
    def from_url(cls, url: str) -> Self:
        parts = urlsplit(url)
        options = parse_url_options(
            url,
            {
                "visibility_timeout": positive_float,
                "result_ttl": positive_float,
                "max_message_size": positive_int,
            },
        )
        return cls(parts.netloc + parts.path.rstrip("/"), **options)

    async def connect(self) -> None:
        # A fresh event loop (a new test, a new anyio.run) must not wait on an old loop's event.
        self._broker.changed = None

    # -- producing -------------------------------------------------------------------------
    async def enqueue(self, envelopes: Sequence[Envelope]) -> list[str]:
        broker = self._broker
        now = time.time()
        self._expire(now)
        ids: list[str] = []
        for env in envelopes:
            if env.key is not None:
                existing = broker.keys.get((env.queue, env.key))
                if existing is not None and existing in broker.jobs:
                    ids.append(existing)
                    continue
                broker.keys[env.queue, env.key] = env.id
            delayed = env.eta is not None and env.eta > now
            job = _Job(
                id=env.id,
                queue=env.queue,
                task=env.task,
                body=env.body,
                key=env.key,
                status=JobStatus.SCHEDULED if delayed else JobStatus.QUEUED,
                eta=env.eta if delayed else None,
                updated_at=now,
            )
            broker.jobs[env.id] = job
            self._place(job)
            ids.append(env.id)
        broker.notify()
        return ids

    def _place(self, job: _Job) -> None:
        q = self._broker.queue(job.queue)
        if job.eta is not None:
            heapq.heappush(q.scheduled, (job.eta, next(self._broker.sequence), job.id))
            q.scheduled_ids.add(job.id)
        else:
            q.ready.append(job.id)

    # -- consuming -------------------------------------------------------------------------
    async def fetch(
        self, queues: Sequence[str], limit: int, *, timeout: float | None
    ) -> list[Delivery]:
        broker = self._broker
        deadline = None if timeout is None else time.monotonic() + timeout
        for name in queues:
            broker.queue(name)
        while True:
            now = time.time()
            wake_at = self._promote(queues, now)
            deliveries = self._take(queues, limit, now)
            if deliveries:
                return deliveries
            wait = None if wake_at is None else max(wake_at - now, 0.0)
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return []
                wait = remaining if wait is None else min(wait, remaining)
            if broker.changed is None:
                broker.changed = anyio.Event()
            with anyio.move_on_after(wait):
                await broker.changed.wait()

    def _promote(self, queues: Sequence[str], now: float) -> float | None:
        """Move due scheduled jobs and expired leases to ready; return the next wake-up."""
        broker = self._broker
        wake_at: float | None = None
        for name in queues:
            q = broker.queues[name]
            while q.scheduled and q.scheduled[0][0] <= now:
                _, _, job_id = heapq.heappop(q.scheduled)
                if job_id in q.scheduled_ids:
                    q.scheduled_ids.discard(job_id)
                    job = broker.jobs.get(job_id)
                    if job is not None:
                        job.status, job.eta = JobStatus.QUEUED, None
                        q.ready.append(job_id)
            if q.scheduled:
                wake_at = q.scheduled[0][0] if wake_at is None else min(wake_at, q.scheduled[0][0])
            for job_id in list(q.running):
                job = broker.jobs.get(job_id)
                if job is None:
                    q.running.discard(job_id)
                elif job.lease_until <= now:
                    # Its worker stopped renewing the lease: it was lost. Deliver again.
                    q.running.discard(job_id)
                    job.status, job.redelivered = JobStatus.QUEUED, True
                    job.receipt = 0
                    q.ready.appendleft(job_id)
                else:
                    wake_at = job.lease_until if wake_at is None else min(wake_at, job.lease_until)
        return wake_at

    def _take(self, queues: Sequence[str], limit: int, now: float) -> list[Delivery]:
        broker = self._broker
        out: list[Delivery] = []
        if len(queues) > 1:
            # Start from a different queue each time so a busy queue cannot starve the rest.
            self._turn = (self._turn + 1) % len(queues)
            queues = [*queues[self._turn :], *queues[: self._turn]]
        for name in queues:
            q = broker.queues[name]
            while q.ready and len(out) < limit:
                job = broker.jobs.get(q.ready.popleft())
                if job is None or job.status is not JobStatus.QUEUED:
                    continue
                if job.cancel_requested:
                    # Cancelled while running on a worker that was lost before it settled.
                    job.status, job.updated_at = JobStatus.CANCELLED, now
                    self._finish(job, now)
                    continue
                job.status = JobStatus.RUNNING
                job.receipt = next(broker.receipts)
                job.lease_until = now + self.visibility_timeout
                job.updated_at = now
                q.running.add(job.id)
                out.append(Delivery(job.id, name, job.body, job.receipt, job.redelivered))
        return out

    async def settle(self, settlements: Sequence[Settlement]) -> None:
        broker = self._broker
        now = time.time()
        for s in settlements:
            d = s.delivery
            job = broker.jobs.get(d.id)
            if job is None or job.receipt != d.receipt:
                continue  # a stale delivery: the job was redelivered since, or expired
            q = broker.queue(job.queue)
            q.running.discard(job.id)
            job.receipt, job.updated_at = 0, now
            outcome = s.outcome
            if outcome is Outcome.RELEASE:
                job.status = JobStatus.QUEUED
                q.ready.appendleft(job.id)
            elif outcome is Outcome.RETRY:
                assert s.retry_body is not None
                job.body, job.attempt, job.error = s.retry_body, s.attempt + 1, s.error
                job.status, job.eta, job.redelivered = JobStatus.FAILED, s.eta, False
                if s.eta is None or s.eta <= now:
                    job.eta = None
                    job.status = JobStatus.QUEUED
                self._place(job)
            else:
                job.ttl = s.result_ttl
                if outcome is Outcome.SUCCEEDED:
                    job.status, job.result, job.error = JobStatus.SUCCEEDED, s.result, None
                elif outcome is Outcome.DEAD:
                    job.status, job.error = JobStatus.DEAD, s.error
                    q.dead[job.id] = DeadLetter(
                        id=job.id,
                        queue=job.queue,
                        body=d.body,
                        error=s.error or ErrorInfo("Unknown", ""),
                        died_at=now,
                        task=s.task or job.task,
                        cursor=f"{next(broker.sequence):020d}",
                    )
                else:
                    job.status = JobStatus.CANCELLED
                self._finish(job, now)
        broker.notify()

    def _finish(self, job: _Job, now: float) -> None:
        broker = self._broker
        if job.key is not None and job.status is not JobStatus.SUCCEEDED:
            # Only a success holds its key for the result TTL; a dead or cancelled job
            # frees it so the same work can be asked for again.
            if broker.keys.get((job.queue, job.key)) == job.id:
                del broker.keys[job.queue, job.key]
        ttl = self.result_ttl if job.ttl is None else job.ttl
        heapq.heappush(broker.expiries, (now + ttl, job.id))
        event = broker.finished.pop(job.id, None)
        if event is not None:
            event.set()

    def _expire(self, now: float) -> None:
        broker = self._broker
        while broker.expiries and broker.expiries[0][0] <= now:
            _, job_id = heapq.heappop(broker.expiries)
            job = broker.jobs.get(job_id)
            # A replayed job finished again later: its own, later expiry entry removes it.
            if job is None or not job.status.finished or job.updated_at + self._ttl(job) > now:
                continue
            del broker.jobs[job_id]
            if job.key is not None and broker.keys.get((job.queue, job.key)) == job_id:
                del broker.keys[job.queue, job.key]

    def _ttl(self, job: _Job) -> float:
        return self.result_ttl if job.ttl is None else job.ttl

    async def renew(self, deliveries: Sequence[Delivery]) -> None:
        lease_until = time.time() + self.visibility_timeout
        jobs = self._broker.jobs
        for d in deliveries:
            job = jobs.get(d.id)
            if job is not None and job.receipt == d.receipt:
                job.lease_until = lease_until

    async def watch_cancellations(self, on_cancel: Callable[[str], None]) -> None:
        watchers = self._broker.cancel_watchers
        watchers.append(on_cancel)
        try:
            await anyio.sleep_forever()
        finally:
            watchers.remove(on_cancel)

    # -- job records -----------------------------------------------------------------------
    def _job(self, job_id: str, queue: str) -> _Job | None:
        job = self._broker.jobs.get(job_id)
        return job if job is not None and job.queue == queue else None

    async def job_info(self, job_id: str, queue: str) -> JobInfo | None:
        self._expire(time.time())
        job = self._job(job_id, queue)
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
        )

    async def wait_finished(self, job_id: str, queue: str, timeout: float | None) -> JobInfo | None:
        broker = self._broker
        job = self._job(job_id, queue)
        if job is not None and not job.status.finished:
            event = broker.finished.get(job_id)
            if event is None:
                event = broker.finished[job_id] = anyio.Event()
            with anyio.fail_after(timeout):
                await event.wait()
        return await self.job_info(job_id, queue)

    async def cancel(self, job_id: str, queue: str) -> bool:
        broker = self._broker
        job = self._job(job_id, queue)
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
        if job.status is JobStatus.QUEUED:
            try:
                q.ready.remove(job_id)
            except ValueError:
                pass
        q.scheduled_ids.discard(job_id)  # its heap entry is skipped when it comes due
        job.status, job.eta, job.updated_at = JobStatus.CANCELLED, None, now
        self._finish(job, now)
        return True

    # -- operations ------------------------------------------------------------------------
    async def queue_stats(self, queues: Sequence[str] | None = None) -> list[QueueStats]:
        broker = self._broker
        names = list(broker.queues) if queues is None else list(queues)
        self._promote([n for n in names if n in broker.queues], time.time())
        stats = []
        for name in names:
            q = broker.queues.get(name) or _Queue()
            stats.append(
                QueueStats(
                    queue=name,
                    pending=len(q.ready),
                    scheduled=len(q.scheduled_ids),
                    running=len(q.running),
                    dead=len(q.dead),
                )
            )
        return stats

    async def dead_letters(
        self, queue: str, *, limit: int = 100, after: str | None = None
    ) -> list[DeadLetter]:
        q = self._broker.queues.get(queue)
        if q is None:
            return []
        entries = iter(q.dead.values())
        if after is not None:  # cursors grow with insertion order, so this skips the earlier
            entries = itertools.dropwhile(lambda entry: entry.cursor <= after, entries)
        return list(itertools.islice(entries, limit))

    async def purge_dead(self, queue: str, ids: Sequence[str] | None = None) -> int:
        q = self._broker.queues.get(queue)
        if q is None:
            return 0
        if ids is None:
            count = len(q.dead)
            q.dead.clear()
            return count
        return sum(q.dead.pop(i, None) is not None for i in ids)

    async def purge_queue(self, queue: str, *, limit: int = 1000) -> int:
        q = self._broker.queues.get(queue)
        if q is None:
            return 0
        now = time.time()
        purged = 0
        while q.ready and purged < limit:
            job = self._broker.jobs.get(q.ready.popleft())
            if job is not None and job.status is JobStatus.QUEUED:
                purged += self._cancel_waiting(job, now)
        for job_id in list(q.scheduled_ids)[: limit - purged]:
            q.scheduled_ids.discard(job_id)  # its heap entry is skipped when it comes due
            job = self._broker.jobs.get(job_id)
            if job is not None:
                purged += self._cancel_waiting(job, now)
        return purged

    def _cancel_waiting(self, job: _Job, now: float) -> int:
        job.status, job.eta, job.updated_at = JobStatus.CANCELLED, None, now
        self._finish(job, now)
        return 1

    async def remove_queue(self, queue: str) -> None:
        self._broker.queues.pop(queue, None)

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
