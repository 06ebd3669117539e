"""asyncq's exceptions.

The hierarchy::

    AsyncqError                    every error asyncq raises on its own account
    ├── ConfigurationError         a bad broker URL, an unknown option, a missing extra
    ├── BrokerError                the broker failed or refused an operation
    │   └── BrokerUnavailable      the broker cannot be reached
    ├── TaskNotFound               no task of that name is registered on the App
    ├── MessageTooLarge            a job is larger than its broker accepts (nothing sent)
    └── JobError                   the outcome of a job, raised by ``Job.result()``
        ├── JobFailed              the job ended in the dead-letter queue
        ├── JobCancelled           the job was cancelled
        └── JobNotFound            no such job (never enqueued, or its record expired)

    Retry                          raised by a handler: run me again later
    Reject                         raised by a handler: dead-letter me now, no retry
    Snooze                         raised by a handler: run me again later, same attempt

``Retry``, ``Reject`` and ``Snooze`` are control flow for handlers, not errors, so they derive from
``Exception`` directly. Waiting for a result past its timeout raises the builtin
``TimeoutError``; unserialisable job arguments raise ``TypeError`` at enqueue time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta

__all__ = [
    "AsyncqError",
    "BrokerError",
    "BrokerUnavailable",
    "ConfigurationError",
    "ErrorInfo",
    "JobCancelled",
    "JobError",
    "JobFailed",
    "JobNotFound",
    "MessageTooLarge",
    "Reject",
    "Retry",
    "Snooze",
    "TaskNotFound",
]


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """Why an attempt failed: the exception's type, message and formatted traceback."""

    type: str
    message: str
    traceback: str = ""

    def __str__(self) -> str:
        return f"{self.type}: {self.message}" if self.message else self.type


class AsyncqError(Exception):
    """Base class of every error asyncq raises on its own account."""


class ConfigurationError(AsyncqError):
    """The App or backend is configured wrongly (URL, option, missing extra)."""


class BrokerError(AsyncqError):
    """The broker failed or refused an operation."""


class BrokerUnavailable(BrokerError):
    """The broker cannot be reached; check that it runs and that the URL is right."""


class TaskNotFound(AsyncqError, LookupError):
    """No task of that name is registered on the App."""


class MessageTooLarge(AsyncqError, ValueError):
    """A job's message is larger than its broker accepts; nothing was sent.

    ``size`` and ``limit`` are in bytes. Pass large payloads by reference (a key in object
    storage, a database id) instead of by value."""

    def __init__(self, message: str, *, size: int, limit: int) -> None:
        super().__init__(message)
        self.size = size
        self.limit = limit


class JobError(AsyncqError):
    """Base class of the errors that report a job's outcome."""

    def __init__(self, message: str, *, job_id: str) -> None:
        super().__init__(message)
        self.job_id = job_id


class JobFailed(JobError):
    """The job exhausted its retries or was rejected, and is in the dead-letter queue."""

    def __init__(self, message: str, *, job_id: str, error: ErrorInfo | None) -> None:
        super().__init__(message, job_id=job_id)
        self.error = error


class JobCancelled(JobError):
    """The job was cancelled before it could finish."""


class JobNotFound(JobError, LookupError):
    """No job with this id is known: never enqueued, or its record has expired."""


class LeaseLost(JobError):
    """This worker no longer holds the job (its lease ran out and the job went back to
    its queue, or to another worker): raised by :meth:`~asyncq.JobContext.complete_in` so
    that the transaction around it rolls back instead of committing work done twice."""


class Retry(Exception):
    """Raise inside a handler to run the job again after ``delay`` seconds.

    With ``delay=None`` the task's backoff decides. A retry still counts against the task's
    ``retries``; once they are spent the job is dead-lettered.
    """

    def __init__(self, delay: float | None = None, reason: str = "") -> None:
        if delay is not None and delay < 0:
            raise ValueError("Retry delay must be >= 0")
        super().__init__(reason or "retry requested")
        self.delay = delay
        self.reason = reason


class Snooze(Exception):
    """Raise inside a handler to run the job again after ``delay`` seconds (or a
    ``timedelta``) **without** spending an attempt: the next run has the same attempt
    number, and the job is SCHEDULED meanwhile. For a job waiting on something outside
    it (a rate-limited API, a file not there yet) rather than failing."""

    def __init__(self, delay: float | timedelta) -> None:
        seconds = delay.total_seconds() if isinstance(delay, timedelta) else delay
        if isinstance(seconds, bool) or not isinstance(seconds, int | float):
            raise TypeError(f"Snooze delay must be seconds or a timedelta, not {delay!r}")
        if not seconds >= 0 or math.isinf(seconds):
            raise ValueError(f"Snooze delay must be a finite number of seconds >= 0, not {delay!r}")
        super().__init__(f"snoozed for {seconds:g} s")
        self.delay = float(seconds)


class Reject(Exception):
    """Raise inside a handler to send the job straight to the dead-letter queue."""

    def __init__(self, reason: str = "rejected") -> None:
        super().__init__(reason)
        self.reason = reason
