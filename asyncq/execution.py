"""Running one job: decode its message, call its handler inside the job's cancel scope, and
turn what happened into a Settlement: a result, a retry after backoff, or a dead letter.

The worker decides when a job runs and what a cancellation meant (see ``Running.cause``);
this module decides what its outcome is.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import anyio

from . import tracing
from .arguments import BadArguments
from .backend import Backend, Delivery, Outcome, Settlement
from .deadlines import TimeLimit, time_limit
from .errors import ErrorInfo, Reject, Retry
from .job import set_current_job
from .serializer import DecodeError, Message

if TYPE_CHECKING:
    from .app import App
    from .task import Task

__all__ = ["CANCELLED", "SHUTDOWN", "Running", "error_info", "execute"]

SHUTDOWN = "shutdown"
CANCELLED = "cancelled"

_UNLIMITED = TimeLimit(None)


class Running:
    """A job in flight: its delivery and the scope that cancels it, with the reason."""

    __slots__ = ("cause", "delivery", "message", "received", "scope", "trace_id")

    def __init__(self, delivery: Delivery, scope: anyio.CancelScope, received: float) -> None:
        self.delivery = delivery
        self.scope = scope
        self.received = received
        """When the worker got the delivery (``time.monotonic()``): a broker's ack deadline
        counts from then."""
        self.cause: str | None = None
        self.message: Message | None = None
        """The decoded job, once its handler is about to run."""
        self.trace_id: str | None = None
        """The attempt's trace id (hex), when it is traced."""

    def cancel(self, cause: str) -> None:
        if self.cause is None:
            self.cause = cause
        self.scope.cancel()


async def execute(app: App, running: Running) -> Settlement:
    """Run the job and say how it ended. A cancelled job comes back CANCELLED; the worker
    turns that into the outcome its cause calls for."""
    delivery = running.delivery
    try:
        msg = Message.decode(delivery.body, app.serializer)
    except DecodeError as exc:
        return Settlement(delivery, Outcome.DEAD, error=ErrorInfo("DecodeError", str(exc)))
    task = app.tasks.get(msg.task)
    if task is None:
        reason = f"no task named {msg.task!r} is registered on this worker's App"
        return _dead(delivery, msg, None, ErrorInfo("UnknownTask", reason))
    running.message = msg
    set_current_job(msg, delivery.redelivered)
    backend = app.backend
    system = backend.system
    with tracing.process_span(
        system, msg.queue, msg.task, msg.id, msg.attempt, msg.headers
    ) as span:
        if span is not None:
            running.trace_id = tracing.trace_id(span)
        settlement = await _run(app, backend, running, msg, task, span)
        if span is not None:
            if settlement.outcome is Outcome.RETRY:
                tracing.outcome(span, "retry", **{"asyncq.retry.eta": settlement.eta})
            elif settlement.outcome is Outcome.DEAD:
                error = settlement.error
                tracing.outcome(span, "dead_lettered", **{"error.type": error and error.type})
        return settlement


async def _run(
    app: App,
    backend: Backend,
    running: Running,
    msg: Message,
    task: Task[Any, Any],
    span: Any,
) -> Settlement:
    delivery, scope = running.delivery, running.scope
    timeout = task.timeout if msg.timeout is None else msg.timeout
    limit = _UNLIMITED
    if timeout is not None or backend.ack_deadline is not None:  # most jobs have neither
        limit = time_limit(backend, timeout, running.received)
        if limit.deadline is not None:
            scope.deadline = limit.deadline
    result: Any = None
    try:
        with scope:
            result = await _call(task, msg)
    except Retry as exc:
        return _failed(app, delivery, msg, task, error_info(exc), exc.delay)
    except Reject as exc:
        tracing.exception(span, exc)
        return _dead(delivery, msg, task, ErrorInfo("Reject", exc.reason))
    except BadArguments as exc:
        tracing.exception(span, exc)
        return _dead(delivery, msg, task, ErrorInfo("BadArguments", str(exc)))
    except Exception as exc:
        tracing.exception(span, exc)
        if not task.retries_error(exc):
            return _dead(delivery, msg, task, error_info(exc))
        return _failed(app, delivery, msg, task, error_info(exc), None)
    if scope.cancelled_caught:
        if running.cause is None:  # no one asked: the deadline passed
            expired = TimeoutError(limit.message())
            error = ErrorInfo("TimeoutError", str(expired))
            tracing.exception(span, expired)
            if not task.retries_error(expired):
                return _dead(delivery, msg, task, error)
            return _failed(app, delivery, msg, task, error, None)
        return Settlement(
            delivery,
            Outcome.CANCELLED,
            task=msg.task,
            attempt=msg.attempt,
            result_ttl=task.result_ttl,
        )
    try:
        body = app.serializer.dumps(result) if task.store_result else None
    except TypeError as exc:
        # Running it again would give the same unserialisable value: no retry.
        return _dead(delivery, msg, task, ErrorInfo("ResultNotSerializable", str(exc)))
    return Settlement(
        delivery,
        Outcome.SUCCEEDED,
        result=body,
        task=msg.task,
        attempt=msg.attempt,
        result_ttl=task.result_ttl,
    )


async def _call(task: Task[Any, Any], msg: Message) -> Any:
    args: Sequence[Any] = msg.args
    kwargs = msg.kwargs
    parameters = task.parameters
    if parameters.converts_arguments:  # plain handlers skip the call
        args, kwargs = parameters.decode(args, kwargs)
    if task.is_async:
        try:
            coroutine = task.fn(*args, **kwargs)
        except TypeError as exc:
            # Binding fails before the body runs; re-check so a TypeError raised by a
            # wrapping decorator's own code still counts as an ordinary failure.
            problem = task.bind_error(args, kwargs)
            if problem is not None:
                raise BadArguments(problem) from exc
            raise
        return await coroutine
    problem = task.bind_error(args, kwargs)
    if problem is not None:
        raise BadArguments(problem)
    # A thread cannot be cancelled: on timeout or shutdown the job is settled at once and
    # the thread is left to finish on its own.
    return await anyio.to_thread.run_sync(_call_sync, task.fn, args, kwargs, abandon_on_cancel=True)


def _failed(
    app: App,
    delivery: Delivery,
    msg: Message,
    task: Task[Any, Any],
    error: ErrorInfo,
    delay: float | None,
) -> Settlement:
    retries = task.retries if msg.retries is None else msg.retries
    if msg.attempt > retries:
        return _dead(delivery, msg, task, error)
    if delay is None:
        delay = task.backoff.delay(msg.attempt)
    eta = time.time() + delay
    return Settlement(
        delivery,
        Outcome.RETRY,
        retry_body=msg.next_attempt(eta).encode(app.serializer),
        eta=eta,
        error=error,
        task=msg.task,
        attempt=msg.attempt,
    )


def _dead(
    delivery: Delivery, msg: Message, task: Task[Any, Any] | None, error: ErrorInfo
) -> Settlement:
    return Settlement(
        delivery,
        Outcome.DEAD,
        error=error,
        task=msg.task,
        attempt=msg.attempt,
        result_ttl=task.result_ttl if task is not None else None,
    )


def _call_sync(fn: Any, args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
    return fn(*args, **kwargs)


def error_info(exc: BaseException) -> ErrorInfo:
    """An exception as a dead letter or a retry records it."""
    return ErrorInfo(
        type=type(exc).__qualname__,
        message=str(exc),
        traceback="".join(traceback.format_exception(exc)),
    )
