"""One attempt at a job, as the worker and the execution middleware see it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import anyio

    from .delivery import Delivery
    from .serializer import Message
    from .settlement import Settlement
    from .task import Task

__all__ = ["CANCELLED", "SHUTDOWN", "Attempt"]

SHUTDOWN = "shutdown"
"""``Attempt.cause`` of a job stopped because its worker is shutting down."""
CANCELLED = "cancelled"
"""``Attempt.cause`` of a job a user cancelled."""


class Attempt:
    """A delivery on its way through a worker: the decoded job, the scope that cancels it
    and why, and what middleware learns about it.

    ``message`` is None when the delivery could not be decoded or names a task this App
    does not have: such an attempt ends DEAD without running anything, and most middleware
    passes it straight on."""

    __slots__ = (
        "cause",
        "delivery",
        "exception",
        "message",
        "received",
        "refusal",
        "ran",
        "scope",
        "started_at",
        "task",
        "trace_id",
    )

    def __init__(self, delivery: Delivery, scope: anyio.CancelScope, received: float) -> None:
        self.delivery = delivery
        self.scope = scope
        self.received = received
        """When the worker got the delivery (``time.monotonic()``): a broker's ack deadline
        counts from then."""
        self.started_at = 0.0
        """When the worker took it up (``time.time()``)."""
        self.cause: str | None = None
        """Why its scope was cancelled: SHUTDOWN or CANCELLED; None otherwise."""
        self.message: Message | None = None
        self.task: Task[Any, Any] | None = None
        self.refusal: Settlement | None = None
        """The DEAD settlement of a delivery that cannot run (undecodable, unknown task)."""
        self.ran = False
        """Whether the handler was called (False for a prefetched job handed back at
        shutdown, or one refused)."""
        self.exception: BaseException | None = None
        """What the handler raised (or the TimeoutError of its deadline), when it failed."""
        self.trace_id: str | None = None
        """The attempt's trace id (hex), when it is traced."""

    @property
    def job_id(self) -> str:
        return self.delivery.id

    @property
    def queue(self) -> str:
        return self.delivery.queue

    @property
    def headers(self) -> dict[str, str]:
        """The job's headers (empty when it could not be decoded)."""
        return self.message.headers if self.message is not None else {}

    def cancel(self, cause: str) -> None:
        if self.cause is None:
            self.cause = cause
        self.scope.cancel()
