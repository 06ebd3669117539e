"""A handle on an enqueued job, and the context a running handler can read."""

from __future__ import annotations

import math
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from .errors import JobCancelled, JobFailed, JobNotFound
from .records import JobInfo, JobStatus, Progress
from .serializer import Message

if TYPE_CHECKING:
    from .app import App
    from .delivery import Delivery
    from .store import JobStore

__all__ = ["Job", "JobContext", "current_job"]

R = TypeVar("R")


class Job(Generic[R]):
    """A job that was enqueued: ask for its status, wait for its result, cancel it."""

    __slots__ = ("_app", "id", "queue")

    def __init__(self, app: App, job_id: str, queue: str) -> None:
        self._app = app
        self.id = job_id
        self.queue = queue

    def __repr__(self) -> str:
        return f"<Job {self.id}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Job) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    async def info(self) -> JobInfo:
        """The job's full record: status, attempt, next run time, last error, and the
        result of a succeeded job, decoded as :meth:`result` gives it."""
        info = await self._app.backend.store.job_info(self.id, self.queue)
        if info is None:
            raise JobNotFound(f"job {self.id} is unknown or its record expired", job_id=self.id)
        if info.raw_result is None:
            return info
        return replace(info, result=self._decode_result(info))

    async def status(self) -> JobStatus:
        return (await self.info()).status

    async def result(self, timeout: float | None = None) -> R:
        """Wait until the job is finished and return its result, converted to the task's
        return annotation (a dataclass, datetime, UUID, ...) when this App has the task.

        Raises :class:`JobFailed` if it ended in the dead-letter queue, :class:`JobCancelled`
        if it was cancelled, and ``TimeoutError`` if ``timeout`` seconds pass first. A task
        registered with ``store_result=False`` gives None.
        """
        info = await self._app.backend.store.wait_finished(self.id, self.queue, timeout)
        if info is None:
            raise JobNotFound(f"job {self.id} is unknown or its record expired", job_id=self.id)
        if info.status is JobStatus.SUCCEEDED:
            if info.raw_result is None:
                return None  # type: ignore[return-value]
            value: R = self._decode_result(info)
            return value
        if info.status is JobStatus.CANCELLED:
            raise JobCancelled(f"job {self.id} was cancelled", job_id=self.id)
        reason = f": {info.error}" if info.error else ""
        raise JobFailed(f"job {self.id} failed{reason}", job_id=self.id, error=info.error)

    def _decode_result(self, info: JobInfo) -> Any:
        assert info.raw_result is not None
        value = self._app.serializer.loads(info.raw_result)
        task = self._app.tasks.get(info.task)
        return value if task is None else task.parameters.decode_result(value)

    async def cancel(self) -> bool:
        """Cancel the job: a queued one never runs, a running one has its scope cancelled.

        Returns False if the job had already finished."""
        return await self._app.backend.store.cancel(self.id, self.queue)


@dataclass(frozen=True, slots=True)
class JobContext:
    """What a running handler knows about its job; see :func:`current_job`."""

    id: str
    task: str
    queue: str
    attempt: int
    """1 on the first run; a retry adds one, a redelivery after a shutdown does not."""
    redelivered: bool
    """True when an earlier delivery's worker was lost before settling the job."""
    enqueued_at: float
    headers: dict[str, str] = field(default_factory=dict)
    scheduled_for: datetime | None = None
    """When the job was meant to run, in UTC: a periodic job's slot, the ``at=``/``delay=``
    time of a delayed job; None for a job enqueued to run at once. Retries and snoozes
    keep it."""
    store: JobStore | None = field(default=None, repr=False, compare=False)
    """Where the job's record lives (for :meth:`set_progress`)."""
    running: _RunningJob | None = field(default=None, repr=False, compare=False)
    """The delivery being run and its App (for :meth:`complete_in`)."""

    async def set_progress(self, value: float, message: str | None = None) -> None:
        """Record how far the job is, ``value`` from 0 to 1 with an optional ``message``;
        any process reads it as ``JobInfo.progress`` while the job runs (and after)."""
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"progress must be a number from 0 to 1, not {value!r}")
        if not (0.0 <= value <= 1.0) or math.isnan(value):
            raise ValueError(f"progress must be from 0 to 1, not {value!r}")
        if message is not None and not isinstance(message, str):
            raise TypeError(f"a progress message must be a str, not {type(message).__name__}")
        if self.store is None:
            raise RuntimeError("this JobContext was not made by a worker: it has no store")
        await self.store.set_progress(self.id, self.queue, Progress(float(value), message))

    async def complete_in(self, connection: object, result: Any = None) -> None:
        """Mark this job succeeded, with ``result``, inside your open database transaction
        on ``connection`` (an asyncpg connection, or a SQLAlchemy ``AsyncConnection`` /
        ``AsyncSession``, on the ``postgresql://`` broker's database): the job's success
        and your writes commit together or not at all. Once it commits, a crash of this
        worker no longer runs the job again, and the worker's own settle changes nothing
        (``result`` is the job's result, whatever the handler returns after).

        Raises ``LeaseLost`` when this worker no longer holds the job (its lease ran out
        and the job went back to the queue, or to another worker): let it propagate, so
        the transaction rolls back. On a broker that cannot join the transaction, and on a
        connection outside a transaction, it raises ``ValueError`` before anything is
        written."""
        if self.running is None:
            raise RuntimeError("this JobContext was not made by a worker: it runs no job")
        await self.running.complete_in(connection, result)


# The worker stores the decoded message; the JobContext is built only for handlers that ask.
_current: ContextVar[tuple[Message, Delivery, App]] = ContextVar("asyncq_current_job")


@dataclass(frozen=True, slots=True)
class _RunningJob:
    delivery: Delivery
    app: App
    task: str

    async def complete_in(self, connection: object, result: Any) -> None:
        app, delivery = self.app, self.delivery
        backend = app.backend
        backend.check_transaction_connection(connection)
        task = app.tasks[self.task]  # the worker runs only registered tasks
        try:
            body = app.serializer.dumps(result) if task.store_result else None
        except TypeError as exc:
            raise TypeError(f"complete_in: the result cannot be serialised: {exc}") from None
        await backend.complete_in_transaction(connection, delivery, body, task.result_ttl)


def current_job() -> JobContext:
    """The job the calling handler runs for. Raises ``RuntimeError`` outside a handler."""
    try:
        msg, delivery, app = _current.get()
    except LookupError:
        raise RuntimeError("asyncq.current_job() was called outside a job handler") from None
    slot = msg.scheduled_for
    return JobContext(
        msg.id,
        msg.task,
        msg.queue,
        msg.attempt,
        delivery.redelivered,
        msg.enqueued_at,
        msg.headers,
        None if slot is None else datetime.fromtimestamp(slot, UTC),
        app.backend.store,
        _RunningJob(delivery, app, msg.task),
    )


def set_current_job(msg: Message, delivery: Delivery, app: App) -> None:
    _current.set((msg, delivery, app))
