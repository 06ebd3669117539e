"""A handle on an enqueued job, and the context a running handler can read."""

from __future__ import annotations

from contextvars import ContextVar, Token
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from .errors import JobCancelled, JobFailed, JobNotFound
from .records import JobInfo, JobStatus
from .serializer import Message

if TYPE_CHECKING:
    from .app import App

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


# The worker stores the decoded message; the JobContext is built only for handlers that ask.
_current: ContextVar[tuple[Message, bool]] = ContextVar("asyncq_current_job")


def current_job() -> JobContext:
    """The job the calling handler runs for. Raises ``RuntimeError`` outside a handler."""
    try:
        msg, redelivered = _current.get()
    except LookupError:
        raise RuntimeError("asyncq.current_job() was called outside a job handler") from None
    return JobContext(
        msg.id, msg.task, msg.queue, msg.attempt, redelivered, msg.enqueued_at, msg.headers
    )


def set_current_job(msg: Message, redelivered: bool) -> Token[tuple[Message, bool]]:
    return _current.set((msg, redelivered))
