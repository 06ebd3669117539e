"""The state of ``memory://`` brokers: jobs, queues, keys and heartbeats, one
:class:`MemoryBroker` per name and process, shared by the memory backend (delivery) and its
store (records). Every change runs between awaits, so the event loop is the lock."""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import anyio

from .errors import ErrorInfo
from .memory_limits import MemoryLimits
from .records import DeadLetter, JobStatus, MinuteCounts, Progress, WorkerInfo
from .throughput import KEPT, MINUTE, minute_of

__all__ = ["BROKERS", "MemoryBroker", "QueueState", "Ready", "StoredJob"]


@dataclass(slots=True)
class StoredJob:
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
    priority: int = 0
    ready_at: float = 0.0
    """When it last became ready to run, where that is not ``updated_at`` (0.0): a delayed
    job's due time, a lost worker's lease expiry. For the queue's lag."""
    progress: Progress | None = None
    snoozes: int = 0


class Ready:
    """A queue's ready jobs: one FIFO per priority, the highest served first. Priority 0
    has its deque at hand (most jobs have it); the others are made when first used."""

    __slots__ = ("_higher", "_levels", "zero")

    def __init__(self) -> None:
        self.zero: deque[str] = deque()
        self._levels: dict[int, deque[str]] = {}
        self._higher: list[deque[str]] = []
        """The deques of the priorities above 0 used so far, the highest first."""

    def _level(self, priority: int) -> deque[str]:
        if not priority:
            return self.zero
        level = self._levels.get(priority)
        if level is None:
            level = self._levels[priority] = deque()
            self._higher = [self._levels[p] for p in sorted(self._levels, reverse=True)]
        return level

    def append(self, job: StoredJob) -> None:
        """At the back of its priority: after every ready job of that priority."""
        if job.priority:
            self._level(job.priority).append(job.id)
        else:  # without the call: every enqueue comes here
            self.zero.append(job.id)

    def appendleft(self, job: StoredJob) -> None:
        """At the front of its priority (a job handed back, or a lost worker's)."""
        self._level(job.priority).appendleft(job.id)

    def remove(self, job: StoredJob) -> None:
        """Take the job out, if it is here (a cancellation before it ran)."""
        level = self._level(job.priority)
        if job.id in level:
            level.remove(job.id)

    def take(self) -> str | None:
        """The next job to serve, taken out; None when there is none."""
        for level in self._higher:
            if level:
                return level.popleft()
        return self.zero.popleft() if self.zero else None

    def heads(self) -> Iterator[str]:
        """The front job of each priority: the longest waiting of each (a job handed back
        goes to the front, and had waited longer than those behind it)."""
        for level in self._higher:
            if level:
                yield level[0]
        if self.zero:
            yield self.zero[0]

    def __len__(self) -> int:
        return len(self.zero) + sum(map(len, self._higher))

    def __iter__(self) -> Iterator[str]:
        """In the order they will be served."""
        for level in self._higher:
            yield from level
        yield from self.zero


@dataclass(slots=True)
class QueueState:
    ready: Ready = field(default_factory=Ready)
    scheduled: list[tuple[float, int, str]] = field(default_factory=list)
    scheduled_ids: set[str] = field(default_factory=set)
    deferred_ids: set[str] = field(default_factory=set)
    """Those of ``scheduled_ids`` waiting on a limit: QUEUED, and counted as pending."""
    running: set[str] = field(default_factory=set)
    dead: dict[str, DeadLetter] = field(default_factory=dict)

    def trim_dead(self, cutoff: float | None, keep: int | None) -> tuple[int, int]:
        """Drop the letters that died before ``cutoff``, then the oldest beyond ``keep``;
        how many went of each."""
        dead = self.dead  # in the order they died: a replayed job that dies again goes last
        expired = beyond = 0
        if cutoff is not None:
            for job_id, letter in list(dead.items()):
                if letter.died_at >= cutoff:
                    break
                del dead[job_id]
                expired += 1
        if keep is not None and len(dead) > keep:
            for job_id in list(dead)[: len(dead) - keep]:
                del dead[job_id]
                beyond += 1
        return expired, beyond


class MemoryBroker:
    """The state one ``memory://name`` URL names, shared by every backend built from it."""

    def __init__(self) -> None:
        self.jobs: dict[str, StoredJob] = {}
        self.keys: dict[tuple[str, str], str] = {}
        """(queue, idempotency key) -> job id."""
        self.queues: dict[str, QueueState] = {}
        self.expiries: list[tuple[float, str]] = []
        """A heap of (when, job id): finished records to drop."""
        self.finished: dict[str, anyio.Event] = {}
        self.cancel_watchers: list[Callable[[str], None]] = []
        self.workers: dict[str, tuple[WorkerInfo, float]] = {}
        self.slot_claims: dict[tuple[str, int], tuple[float, str]] = {}
        """(schedule, slot in ms since the epoch) -> when the claim expires, the slot's job."""
        self.paused_schedules: set[str] = set()
        self.limits = MemoryLimits()
        """Rate and concurrency limit state."""
        self.minutes: dict[tuple[str, int], list[int]] = {}
        """(queue, minute) -> [succeeded, failed] (see asyncq.throughput)."""
        self.receipts = itertools.count(1)
        self.sequence = itertools.count()
        self.changed: anyio.Event | None = None

    def queue(self, name: str) -> QueueState:
        q = self.queues.get(name)
        if q is None:
            q = self.queues[name] = QueueState()
        return q

    def count(self, counts: dict[str, tuple[int, int]], now: float) -> None:
        minute = minute_of(now)
        for queue, (succeeded, failed) in counts.items():
            n = self.minutes.setdefault((queue, minute), [0, 0])
            n[0] += succeeded
            n[1] += failed
        if len(self.minutes) > 64 * len(self.queues):  # now and then, forget the old
            oldest = minute - KEPT
            self.minutes = {k: v for k, v in self.minutes.items() if k[1] > oldest}

    def minute_counts(self, queues: Sequence[str], minutes: int, now: float) -> list[MinuteCounts]:
        since = max(minute_of(now) - (minutes - 1) * MINUTE, minute_of(now - KEPT))
        found = [
            MinuteCounts(queue, minute, n[0], n[1])
            for (queue, minute), n in self.minutes.items()
            if queue in queues and minute >= since
        ]
        return sorted(found, key=lambda c: (c.minute, c.queue))

    def make_due(self, queue: str, job_id: str, now: float) -> bool:
        """A job waiting for its time (``run_now``) due at ``now``; False if none waits."""
        q, job = self.queues.get(queue), self.jobs.get(job_id)
        if q is None or job is None or job_id not in q.scheduled_ids:
            return False
        # Its old entry goes: left in the heap, it could promote a later reschedule early.
        q.scheduled = [entry for entry in q.scheduled if entry[2] != job_id]
        heapq.heapify(q.scheduled)
        job.eta = now
        heapq.heappush(q.scheduled, (now, next(self.sequence), job_id))
        self.notify()
        return True

    def forget_queue(self, queue: str) -> None:
        self.queues.pop(queue, None)
        self.minutes = {k: v for k, v in self.minutes.items() if k[0] != queue}

    def notify(self) -> None:
        if self.changed is not None:
            self.changed.set()
            self.changed = None

    def finish(self, job: StoredJob, now: float, default_ttl: float) -> None:
        """A job has ended (its status says how): free its key unless it succeeded, keep
        its record for its TTL, wake whoever waits on it."""
        if job.key is not None and job.status is not JobStatus.SUCCEEDED:
            # Only a success holds its key for the result TTL; a dead or cancelled job
            # frees it so the same work can be asked for again.
            if self.keys.get((job.queue, job.key)) == job.id:
                del self.keys[job.queue, job.key]
        ttl = default_ttl if job.ttl is None else job.ttl
        heapq.heappush(self.expiries, (now + ttl, job.id))
        event = self.finished.pop(job.id, None)
        if event is not None:
            event.set()

    def expire(self, now: float, default_ttl: float) -> None:
        """Drop the records of finished jobs whose TTL has passed."""
        while self.expiries and self.expiries[0][0] <= now:
            _, job_id = heapq.heappop(self.expiries)
            job = self.jobs.get(job_id)
            # A replayed job finished again later: its own, later expiry entry removes it.
            ttl = default_ttl if job is None or job.ttl is None else job.ttl
            if job is None or not job.status.finished or job.updated_at + ttl > now:
                continue
            del self.jobs[job_id]
            if job.key is not None and self.keys.get((job.queue, job.key)) == job_id:
                del self.keys[job.queue, job.key]

    def job(self, job_id: str, queue: str) -> StoredJob | None:
        job = self.jobs.get(job_id)
        return job if job is not None and job.queue == queue else None


BROKERS: dict[str, MemoryBroker] = {}
"""Each ``memory://name`` in this process, by name."""
