"""What a backend stores and reports: job status, job records, queue stats, dead letters,
worker heartbeats. Plain frozen dataclasses, shared by every backend and the CLI."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from .errors import ErrorInfo

__all__ = ["DeadLetter", "JobInfo", "JobStatus", "QueueStats", "WorkerInfo"]


class JobStatus(enum.StrEnum):
    """Where a job is in its life."""

    QUEUED = "queued"
    """Waiting in its queue for a worker."""
    SCHEDULED = "scheduled"
    """Waiting for its ``eta`` (a delayed job)."""
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
class JobInfo:
    """A job's record as the backend keeps it."""

    id: str
    status: JobStatus
    task: str = ""
    queue: str = ""
    attempt: int = 1
    eta: float | None = None
    """When a SCHEDULED or FAILED job runs next (epoch seconds)."""
    result: bytes | None = None
    """The serialized return value of a SUCCEEDED job."""
    error: ErrorInfo | None = None
    """The last failure of a FAILED or DEAD job."""
    updated_at: float = 0.0


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
