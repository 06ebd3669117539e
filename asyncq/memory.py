"""The in-memory backend: the whole contract inside one process, with no dependencies.

For tests and for embedding (a FastAPI app running its own worker). ``memory://`` URLs with
the same name share one broker per process, so a producer App and a worker App built from
``memory://shop`` see the same queues; pick a distinct name per test to keep tests apart.
Nothing survives the process.

Options (URL query): ``visibility_timeout`` (seconds, default 30): how long a delivered,
unsettled job waits for its worker's lease renewal before it is delivered again;
``result_ttl`` (seconds, default 86400): how long finished jobs' records and results stay;
``max_message_size`` (bytes, default none): refuse larger jobs at enqueue, as a networked
broker would; ``dead_ttl`` (seconds) and ``dead_max`` (per queue), default none: the
dead letters kept (see :mod:`asyncq.retention`).

A queue's ready jobs are one FIFO per priority, served highest first.

Every operation runs synchronously between awaits, so each is atomic with respect to the
others: the event loop is the lock.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Sequence
from typing import Self
from urllib.parse import urlsplit

import anyio

from .backend import Backend, parse_url_options, positive_float, positive_int
from .delivery import Delivery, Envelope
from .errors import ErrorInfo
from .memory_broker import BROKERS, MemoryBroker, QueueState, StoredJob
from .memory_store import MemoryStore
from .records import (
    DeadLetter,
    JobListing,
    JobStatus,
    MinuteCounts,
    QueueStats,
    TrimmedDeadLetters,
)
from .settlement import Outcome, Settlement
from .store import JobStore
from .throughput import count_batch

__all__ = ["MemoryBackend"]

# Looked up once: on Python 3.11 an enum member looked up on its class is a property call,
# and a settlement's outcome is compared with several per job.
_RELEASE, _RETRY, _SNOOZE = Outcome.RELEASE, Outcome.RETRY, Outcome.SNOOZE
_DEFER, _SUCCEEDED, _DEAD = Outcome.DEFER, Outcome.SUCCEEDED, Outcome.DEAD


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
        dead_ttl: float | None = None,
        dead_max: int | None = None,
    ) -> None:
        self.name = name
        self.dead_ttl, self.dead_max = dead_ttl, dead_max
        # No limit of its own; a test can set a production broker's, to catch oversized
        # jobs before they reach one.
        self.max_message_size = max_message_size
        self.visibility_timeout = visibility_timeout
        self.result_ttl = result_ttl
        self.lease_renewal_interval = visibility_timeout / 3
        self._broker = BROKERS.setdefault(name, MemoryBroker())
        self._store = MemoryStore(self._broker, result_ttl)
        self._turn = 0

    @property
    def store(self) -> JobStore:
        return self._store

    @classmethod
    def from_url(cls, url: str) -> Self:
        parts = urlsplit(url)
        options = parse_url_options(
            url,
            {
                "visibility_timeout": positive_float,
                "result_ttl": positive_float,
                "max_message_size": positive_int,
                "dead_ttl": positive_float,
                "dead_max": positive_int,
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
        self._broker.expire(now, self.result_ttl)
        ids: list[str] = []
        for env in envelopes:
            if env.key is not None:
                existing = broker.keys.get((env.queue, env.key))
                if existing is not None and existing in broker.jobs:
                    ids.append(existing)
                    continue
                broker.keys[env.queue, env.key] = env.id
            delayed = env.eta is not None and env.eta > now
            job = StoredJob(
                id=env.id,
                queue=env.queue,
                task=env.task,
                body=env.body,
                key=env.key,
                status=JobStatus.SCHEDULED if delayed else JobStatus.QUEUED,
                eta=env.eta if delayed else None,
                updated_at=now,
                priority=env.priority,
            )
            broker.jobs[env.id] = job
            self._place(job)
            ids.append(env.id)
        broker.notify()
        return ids

    def _place(self, job: StoredJob) -> None:
        q = self._broker.queue(job.queue)
        if job.eta is not None:
            heapq.heappush(q.scheduled, (job.eta, next(self._broker.sequence), job.id))
            q.scheduled_ids.add(job.id)
        elif job.priority:
            q.ready.append(job)
        else:  # priority 0, most jobs: straight into its deque, without a call
            q.ready.zero.append(job.id)

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
                    q.deferred_ids.discard(job_id)
                    job = broker.jobs.get(job_id)
                    if job is not None:
                        job.status, job.ready_at = JobStatus.QUEUED, job.eta or now
                        job.eta = None
                        q.ready.append(job)
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
                    job.receipt, job.ready_at = 0, job.lease_until
                    q.ready.appendleft(job)
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
            take = q.ready.take
            while len(out) < limit:
                job_id = take()
                if job_id is None:
                    break
                job = broker.jobs.get(job_id)
                if job is None or job.status is not JobStatus.QUEUED:
                    continue
                if job.cancel_requested:
                    # Cancelled while running on a worker that was lost before it settled.
                    job.status, job.updated_at = JobStatus.CANCELLED, now
                    self._broker.finish(job, now, self.result_ttl)
                    continue
                job.status = JobStatus.RUNNING
                job.receipt = next(broker.receipts)
                job.lease_until = now + self.visibility_timeout
                job.updated_at = now
                q.running.add(job.id)
                out.append(
                    Delivery(job.id, name, job.body, job.receipt, job.redelivered, job.priority)
                )
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
            job.receipt, job.updated_at, job.ready_at = 0, now, 0.0
            outcome = s.outcome
            if outcome is _RELEASE:
                job.status = JobStatus.QUEUED
                q.ready.appendleft(job)
            elif outcome is _RETRY:
                assert s.retry_body is not None
                job.body, job.attempt, job.error = s.retry_body, s.attempt + 1, s.error
                job.status, job.eta, job.redelivered = JobStatus.FAILED, s.eta, False
                if s.eta is None or s.eta <= now:
                    job.eta = None
                    job.status = JobStatus.QUEUED
                self._place(job)
            elif outcome is _SNOOZE:
                assert s.retry_body is not None
                job.body, job.snoozes, job.redelivered = s.retry_body, job.snoozes + 1, False
                job.status, job.eta = JobStatus.SCHEDULED, s.eta
                if s.eta is None or s.eta <= now:
                    job.eta = None
                    job.status = JobStatus.QUEUED
                self._place(job)
            elif outcome is _DEFER:
                job.status, job.redelivered = JobStatus.QUEUED, False
                if s.eta is not None and s.eta > now:
                    job.eta = s.eta
                    q.deferred_ids.add(job.id)
                self._place(job)
            else:
                job.ttl = s.result_ttl
                if outcome is _SUCCEEDED:
                    job.status, job.result, job.error = JobStatus.SUCCEEDED, s.result, None
                elif outcome is _DEAD:
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
                self._broker.finish(job, now, self.result_ttl)
        broker.count(count_batch(settlements), now)
        broker.notify()

    counts_minutes = True

    async def minute_counts(self, queues: Sequence[str], minutes: int) -> list[MinuteCounts]:
        return self._broker.minute_counts(queues, minutes, time.time())

    async def renew(self, deliveries: Sequence[Delivery]) -> None:
        lease_until = time.time() + self.visibility_timeout
        jobs = self._broker.jobs
        for d in deliveries:
            job = jobs.get(d.id)
            if job is not None and job.receipt == d.receipt:
                job.lease_until = lease_until

    # -- operations ------------------------------------------------------------------------
    async def queue_stats(self, queues: Sequence[str] | None = None) -> list[QueueStats]:
        broker = self._broker
        names = list(broker.queues) if queues is None else list(queues)
        now = time.time()
        self._promote([n for n in names if n in broker.queues], now)
        stats = []
        for name in names:
            q = broker.queues.get(name) or QueueState()
            stats.append(
                QueueStats(
                    queue=name,
                    pending=len(q.ready) + len(q.deferred_ids),
                    scheduled=len(q.scheduled_ids) - len(q.deferred_ids),
                    running=len(q.running),
                    dead=len(q.dead),
                    oldest_pending_age=self._oldest_pending_age(q, now),
                )
            )
        return stats

    def _oldest_pending_age(self, q: QueueState, now: float) -> float:
        oldest = now
        for job_id in q.ready.heads():
            job = self._broker.jobs.get(job_id)
            if job is not None and job.status is JobStatus.QUEUED:
                oldest = min(oldest, job.ready_at or job.updated_at)
        return max(now - oldest, 0.0)

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

    can_run_now = True

    async def run_now(self, queue: str, job_id: str) -> bool:
        return self._broker.make_due(queue, job_id, time.time())

    async def dead_letter(self, queue: str, job_id: str) -> DeadLetter | None:
        q = self._broker.queues.get(queue)
        return None if q is None else q.dead.get(job_id)

    async def purge_dead(self, queue: str, ids: Sequence[str] | None = None) -> int:
        q = self._broker.queues.get(queue)
        if q is None:
            return 0
        if ids is None:
            count = len(q.dead)
            q.dead.clear()
            return count
        return sum(q.dead.pop(i, None) is not None for i in ids)

    async def trim_dead(self, queues: Sequence[str]) -> list[TrimmedDeadLetters]:
        trims = []
        cutoff = None if self.dead_ttl is None else time.time() - self.dead_ttl
        for name in queues:
            q = self._broker.queues.get(name)
            if q is None or not q.dead:
                continue
            expired, beyond = q.trim_dead(cutoff, self.dead_max)
            if expired or beyond:
                trims.append(TrimmedDeadLetters(name, expired, beyond))
        return trims

    async def purge_queue(self, queue: str, *, limit: int = 1000) -> int:
        q = self._broker.queues.get(queue)
        if q is None:
            return 0
        now = time.time()
        purged = 0
        while purged < limit:
            job_id = q.ready.take()
            if job_id is None:
                break
            job = self._broker.jobs.get(job_id)
            if job is not None and job.status is JobStatus.QUEUED:
                purged += self._cancel_waiting(job, now)
        for job_id in list(q.scheduled_ids)[: limit - purged]:
            q.scheduled_ids.discard(job_id)  # its heap entry is skipped when it comes due
            q.deferred_ids.discard(job_id)
            job = self._broker.jobs.get(job_id)
            if job is not None:
                purged += self._cancel_waiting(job, now)
        return purged

    def _cancel_waiting(self, job: StoredJob, now: float) -> int:
        job.status, job.eta, job.updated_at = JobStatus.CANCELLED, None, now
        self._broker.finish(job, now, self.result_ttl)
        return 1

    async def list_jobs(
        self, queue: str, status: JobStatus, *, limit: int = 100, after: str | None = None
    ) -> list[JobListing]:
        broker = self._broker
        q = broker.queues.get(queue)
        if q is None:
            return []
        if status is JobStatus.DEAD:
            return [
                JobListing(d.id, queue, JobStatus.DEAD, d.task, cursor=d.cursor)
                for d in await self.dead_letters(queue, limit=limit, after=after)
            ]
        ids: list[str]
        if status is JobStatus.QUEUED:  # ready first, then those waiting on a limit
            ids = list(q.ready) + [i for _, _, i in sorted(q.scheduled) if i in q.deferred_ids]
        elif status is JobStatus.SCHEDULED:
            waiting = q.scheduled_ids - q.deferred_ids
            ids = [i for _, _, i in sorted(q.scheduled) if i in waiting]
        elif status is JobStatus.RUNNING:
            ids = sorted(q.running, key=lambda i: broker.jobs[i].receipt)
        else:
            raise ValueError(f"jobs cannot be listed by status {status.value!r}")
        # The cursor is the job's place in this listing; a page goes on after it.
        start = int(after) + 1 if after is not None else 0
        found = []
        for place, job_id in enumerate(ids[start:], start):
            job = broker.jobs.get(job_id)
            if job is None:
                continue
            found.append(
                JobListing(job.id, queue, job.status, job.task, job.attempt, job.eta, str(place))
            )
            if len(found) >= limit:
                break
        return found

    async def remove_queue(self, queue: str) -> None:
        self._broker.forget_queue(queue)
