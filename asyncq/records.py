"""What a backend stores and reports: job status, job records, queue stats, dead letters,
worker heartbeats. Plain frozen dataclasses, shared by every backend and the CLI."""

from __future__ import annotations

import enum
import math
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .errors import ErrorInfo

__all__ = [
    "GONE_RETENTION",
    "LISTABLE",
    "DeadLetter",
    "DeadLetterFilter",
    "JobInfo",
    "JobListing",
    "JobStatus",
    "MinuteCounts",
    "Progress",
    "QueueStats",
    "ConcurrencyRequest",
    "Permit",
    "RateRequest",
    "ScheduleState",
    "TrimmedDeadLetters",
    "WorkerInfo",
]


class JobStatus(enum.StrEnum):
    """Where a job is in its life."""

    QUEUED = "queued"
    """Waiting in its queue for a worker."""
    SCHEDULED = "scheduled"
    """Waiting for its ``eta``: a delayed job, or a snoozed one."""
    RUNNING = "running"
    """A worker holds it and runs the handler."""
    SUCCEEDED = "succeeded"
    """Finished; its result is kept for the result TTL."""
    FAILED = "failed"
    """An attempt failed and a retry is scheduled (see ``JobInfo.eta``)."""
    DEAD = "dead"
    """In the dead-letter queue: retries exhausted, rejected, or undeliverable."""
    CANCELLED = "cancelled"
    """Cancelled by a user; it will not run (again)."""

    @property
    def finished(self) -> bool:
        """True once the job will not run again without a replay."""
        return self in _FINISHED


_FINISHED = frozenset({JobStatus.SUCCEEDED, JobStatus.DEAD, JobStatus.CANCELLED})


@dataclass(frozen=True, slots=True)
class Progress:
    """How far a running job says it is: ``value`` from 0 to 1, and what it is doing."""

    value: float
    message: str | None = None


@dataclass(frozen=True, slots=True)
class JobInfo:
    """A job's record as the backend keeps it."""

    id: str
    status: JobStatus
    task: str = ""
    queue: str = ""
    attempt: int = 1
    eta: float | None = None
    """When a SCHEDULED or FAILED job runs next (epoch seconds)."""
    result: Any = None
    """The return value of a SUCCEEDED job, decoded (as the task's return annotation names
    it, when the App knows the task); None for other jobs and for tasks that do not store
    results."""
    error: ErrorInfo | None = None
    """The last failure of a FAILED or DEAD job."""
    updated_at: float = 0.0
    raw_result: bytes | None = None
    """The return value as the broker stores it, serialized."""
    progress: Progress | None = None
    """The last progress its handler reported (``current_job().set_progress``)."""
    snoozes: int = 0
    """How often its handler snoozed it (``raise asyncq.Snooze(delay)``); a snooze spends
    no attempt, so this is counted apart from ``attempt``."""


@dataclass(frozen=True, slots=True)
class JobListing:
    """One job as a listing of a queue shows it (``Backend.list_jobs``): what the broker's
    own structure for that state holds, without reading the job's record."""

    id: str
    queue: str
    status: JobStatus
    task: str = ""
    attempt: int = 1
    eta: float | None = None
    """SCHEDULED (and FAILED, waiting for a retry): when it runs next."""
    cursor: str = ""
    """The job's place in the listing, for the next page (``after=``)."""


LISTABLE = (JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.RUNNING, JobStatus.DEAD)
"""The states ``Backend.list_jobs`` lists; finished jobs are found by id. SCHEDULED
includes jobs waiting for a retry (their status says FAILED)."""


@dataclass(frozen=True, slots=True)
class MinuteCounts:
    """How many attempts of a queue's jobs ended in one minute (``Backend.minute_counts``)."""

    queue: str
    minute: int
    """The minute's start, in seconds since the epoch (a multiple of 60)."""
    succeeded: int = 0
    failed: int = 0
    """Attempts that failed: retried, or dead-lettered."""


@dataclass(frozen=True, slots=True)
class QueueStats:
    """Depth of one queue: what autoscaling and alerts look at."""

    queue: str
    pending: int = 0
    """Ready to run now, waiting for a worker."""
    scheduled: int = 0
    """Delayed, or waiting for a retry."""
    running: int = 0
    """Held by workers and not yet acknowledged."""
    dead: int = 0
    """In the dead-letter queue."""
    oldest_pending_age: float | None = field(default=None, compare=False)
    """Seconds the oldest pending job has been ready and waiting (the queue's lag, what to
    autoscale on): 0.0 when none is pending; None where the broker cannot tell without a
    write per job (RabbitMQ). A reading of time rather than a count, so it is left out of
    equality: two reads of an unchanged queue compare equal."""


@dataclass(frozen=True, slots=True)
class RateRequest:
    """One start asking for a permit of a rate limit: at most ``limit`` starts in any
    ``per`` seconds under ``key``, across every process of the broker."""

    key: str
    """The limit's name: its task's, with the value of its ``key=`` argument when it has
    one. No braces (Redis Cluster hash tags)."""
    limit: int
    per: float
    token: str
    """This start's (the job's id and attempt): the same when it asks again after a
    refusal, which keeps its place among the waiters."""


@dataclass(frozen=True, slots=True)
class ConcurrencyRequest:
    """One job asking for a permit of a concurrency limit: at most ``limit`` holders of
    ``key`` at once, across every process of the broker, each for ``lease`` seconds unless
    renewed."""

    key: str
    """The limit's name, as for :class:`RateRequest`."""
    limit: int
    holder: str
    """The job's id: a redelivered copy of a job takes over its own permit, not a second."""
    lease: float
    ticket: int | None = None
    """Its place in its key's line (from ``take_order_tickets`` at enqueue), for a limit of
    1 whose jobs start in enqueue order; None: no order."""


@dataclass(frozen=True, slots=True)
class Permit:
    """A concurrency permit one job holds: released when it ends, renewed while it runs."""

    key: str
    holder: str


@dataclass(frozen=True, slots=True)
class TrimmedDeadLetters:
    """What retention removed from one queue's dead letters, in one ``trim_dead``."""

    queue: str
    expired: int = 0
    """Older than the backend's ``dead_ttl``."""
    beyond_max: int = 0
    """The oldest of those beyond its ``dead_max``."""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One entry of a dead-letter queue."""

    id: str
    """The job id, or the broker's id for a message that could not be decoded."""
    queue: str
    body: bytes
    """The job as it was last delivered, so a replay runs exactly that."""
    error: ErrorInfo
    died_at: float
    task: str = ""
    cursor: str = ""
    """The entry's position in the dead-letter queue, for paging (``after=``)."""


class DeadLetterFilter:
    """Which dead letters an operation applies to: every one, unless limited to some job
    ids, one task, or an age (seconds since they died, counted from when it is made)."""

    __slots__ = ("_died_after", "_died_before", "by_id_only", "ids", "task")

    def __init__(
        self,
        ids: Collection[str] | None = None,
        task: str | None = None,
        older_than: float | None = None,
        newer_than: float | None = None,
    ) -> None:
        for name, value in (("older_than", older_than), ("newer_than", newer_than)):
            if value is not None and not value >= 0:
                raise ValueError(f"{name} must be a number of seconds >= 0, not {value!r}")
        now = time.time()
        self.ids = frozenset(ids) if ids is not None else None
        self.task = task
        self._died_before = now - older_than if older_than is not None else math.inf
        self._died_after = now - newer_than if newer_than is not None else -math.inf
        self.by_id_only = task is None and older_than is None and newer_than is None

    def __call__(self, dead: DeadLetter) -> bool:
        return (
            (self.ids is None or dead.id in self.ids)
            and (self.task is None or dead.task == self.task)
            and self._died_after <= dead.died_at <= self._died_before
        )


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """A worker's heartbeat."""

    id: str
    host: str
    pid: int
    queues: tuple[str, ...]
    concurrency: int
    in_flight: int = 0
    started_at: float = 0.0
    last_seen: float = 0.0
    extra: dict[str, str] = field(default_factory=dict)
    gone: bool = False
    """No heartbeat within its TTL: the worker died or hangs (one that stops cleanly
    deregisters). The broker reclaims its jobs; it is listed as gone for ``GONE_RETENTION``."""


GONE_RETENTION = 3600.0
"""Seconds a worker that stopped heartbeating stays listed as gone, for whoever looks into
why it died."""


@dataclass(frozen=True, slots=True)
class ScheduleState:
    """What the store knows of one periodic schedule (``JobStore.schedule_state``)."""

    last_slot: datetime | None = None
    """The latest slot fired (claimed) within the claims' TTL, in UTC."""
    last_job: str | None = None
    """The id of that slot's job."""
    paused: bool = False
    """Paused schedules fire no slots until resumed (``asyncq schedules pause``)."""
