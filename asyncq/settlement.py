"""How one delivery ended: the ``Outcome`` words and the ``Settlement`` a backend carries out.

Each outcome has one constructor (``Settlement.succeeded``, ``.retry``, ``.snooze``, ``.dead``,
``.cancelled``, ``.release``, ``.defer``), and each takes the job's task and attempt, so
whatever logs, counts or traces a settlement always knows which attempt of which task it was. The
outcome of an attempt is decided in one place, :func:`asyncq.execution.execute`; a backend
builds settlements only to hand back deliveries it could not pass on (``release``).

What each outcome asks of a backend:

* ``SUCCEEDED``: store the result (unless ``result`` is None), finish the record, ack;
* ``RETRY``: schedule ``retry_body`` (attempt + 1) for ``eta`` and ack the current delivery,
  in one atomic step;
* ``SNOOZE``: like ``RETRY``, but ``retry_body`` is the same attempt: schedule it for
  ``eta``, ack the current delivery, count a snooze on the record, status SCHEDULED;
* ``DEAD``: move the message to the dead-letter queue with ``error``, ack;
* ``CANCELLED``: finish the record as cancelled, ack;
* ``RELEASE``: give the job back to its queue unacknowledged, unchanged, for another worker
  (a graceful shutdown);
* ``DEFER``: the job is over a rate or concurrency limit and was not started: back to its
  queue unchanged (same body, attempt and snoozes), not before ``eta``, and while it waits
  it is QUEUED and counted as pending, not scheduled.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from .delivery import Delivery
from .errors import ErrorInfo

__all__ = ["Outcome", "Settlement"]


class Outcome(enum.Enum):
    """How an attempt ended. ``label`` is the word logs and metrics use for it."""

    SUCCEEDED = "succeeded"
    RETRY = "retry"
    SNOOZE = "snooze"
    DEAD = "dead"
    CANCELLED = "cancelled"
    RELEASE = "release"
    DEFER = "defer"

    @property
    def label(self) -> str:
        """The outcome in job logs and the ``outcome`` metric attribute: "succeeded",
        "retried", "snoozed", "dead", "cancelled", "released", "deferred"."""
        return _LABELS[self]

    @property
    def event(self) -> str | None:
        """The span event an attempt with this outcome gets ("asyncq.retry",
        "asyncq.dead_lettered"); None where the span's own end says enough."""
        return _EVENTS.get(self)


_LABELS = {
    Outcome.SUCCEEDED: "succeeded",
    Outcome.RETRY: "retried",
    Outcome.SNOOZE: "snoozed",
    Outcome.DEAD: "dead",
    Outcome.CANCELLED: "cancelled",
    Outcome.RELEASE: "released",
    Outcome.DEFER: "deferred",
}
_EVENTS = {
    Outcome.RETRY: "asyncq.retry",
    Outcome.SNOOZE: "asyncq.snooze",
    Outcome.DEAD: "asyncq.dead_lettered",
}


@dataclass(slots=True)
class Settlement:
    """How one delivery ended; build one with the constructor of its outcome."""

    delivery: Delivery
    outcome: Outcome
    result: bytes | None = None
    """SUCCEEDED: the serialized return value (None: the task stores none)."""
    retry_body: bytes | None = None
    """RETRY: the next attempt's message (attempt + 1); SNOOZE: the same attempt's."""
    eta: float | None = None
    """RETRY, SNOOZE and DEFER: when the job may run again."""
    error: ErrorInfo | None = None
    """RETRY and DEAD: why the attempt failed."""
    task: str = ""
    """The job's task ('' when its message could not be decoded)."""
    attempt: int = 1
    """The attempt that ended (RETRY: the one that failed, not the next)."""
    result_ttl: float | None = None
    """SUCCEEDED, DEAD, CANCELLED: seconds to keep the job's record (and result), instead of
    the backend's ``result_ttl``; the task's own ``result_ttl``."""

    @classmethod
    def succeeded(
        cls,
        delivery: Delivery,
        *,
        task: str,
        attempt: int,
        result: bytes | None,
        result_ttl: float | None = None,
    ) -> Settlement:
        return cls(
            delivery,
            Outcome.SUCCEEDED,
            result=result,
            task=task,
            attempt=attempt,
            result_ttl=result_ttl,
        )

    @classmethod
    def retry(
        cls,
        delivery: Delivery,
        *,
        task: str,
        attempt: int,
        body: bytes,
        eta: float,
        error: ErrorInfo,
    ) -> Settlement:
        return cls(
            delivery,
            Outcome.RETRY,
            retry_body=body,
            eta=eta,
            error=error,
            task=task,
            attempt=attempt,
        )

    @classmethod
    def snooze(
        cls, delivery: Delivery, *, task: str, attempt: int, body: bytes, eta: float
    ) -> Settlement:
        return cls(delivery, Outcome.SNOOZE, retry_body=body, eta=eta, task=task, attempt=attempt)

    @classmethod
    def dead(
        cls,
        delivery: Delivery,
        *,
        task: str,
        attempt: int,
        error: ErrorInfo,
        result_ttl: float | None = None,
    ) -> Settlement:
        return cls(
            delivery, Outcome.DEAD, error=error, task=task, attempt=attempt, result_ttl=result_ttl
        )

    @classmethod
    def cancelled(
        cls, delivery: Delivery, *, task: str, attempt: int, result_ttl: float | None = None
    ) -> Settlement:
        return cls(delivery, Outcome.CANCELLED, task=task, attempt=attempt, result_ttl=result_ttl)

    @classmethod
    def release(cls, delivery: Delivery, *, task: str = "", attempt: int = 1) -> Settlement:
        """Back to the queue as it was; ``task`` is '' for a delivery never decoded (a
        backend handing back what it fetched beyond a worker's limit)."""
        return cls(delivery, Outcome.RELEASE, task=task, attempt=attempt)

    @classmethod
    def defer(cls, delivery: Delivery, *, task: str, attempt: int, eta: float) -> Settlement:
        """Not started: over a limit until about ``eta``."""
        return cls(delivery, Outcome.DEFER, eta=eta, task=task, attempt=attempt)
