"""Running one attempt: decode its message, call its handler inside the attempt's cancel
scope, and decide how it ended: a result, a retry after backoff, a snooze, a dead letter, a
cancellation, or a release back to the queue. This is the one place an attempt's outcome is
decided; the worker says when an attempt runs and why its scope was cancelled
(``Attempt.cause``), the middleware around :func:`execute` observes.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import anyio

from .arguments import BadArguments
from .attempt import SHUTDOWN, Attempt
from .deadlines import TimeLimit, time_limit
from .errors import ErrorInfo, Reject, Retry, Snooze
from .job import set_current_job
from .serializer import DecodeError, Message
from .settlement import Outcome, Settlement

if TYPE_CHECKING:
    from .app import App
    from .task import Task

__all__ = ["admit", "error_info", "execute"]

_UNLIMITED = TimeLimit(None)


def admit(app: App, attempt: Attempt) -> None:
    """Decode the delivery and find its task, before the middleware sees the attempt; a
    delivery that cannot run gets its DEAD settlement as ``attempt.refusal``."""
    delivery = attempt.delivery
    try:
        msg = Message.decode(delivery.body, app.serializer)
    except DecodeError as exc:
        error = ErrorInfo("DecodeError", str(exc))
        attempt.refusal = Settlement.dead(delivery, task="", attempt=1, error=error)
        return
    task = app.tasks.get(msg.task)
    if task is None:
        reason = f"no task named {msg.task!r} is registered on this worker's App"
        error = ErrorInfo("UnknownTask", reason)
        attempt.refusal = Settlement.dead(delivery, task=msg.task, attempt=msg.attempt, error=error)
        return
    attempt.message, attempt.task = msg, task
    set_current_job(msg, delivery, app)


async def execute(app: App, attempt: Attempt) -> Settlement:
    """Run the attempt (unless it is refused, or its worker stopped before it started) and
    say how it ended. Why its scope was cancelled wins over what the handler made of it (an
    exception of its own, say); a handler that finished anyway keeps its result."""
    if attempt.refusal is not None:
        return attempt.refusal
    msg, task = attempt.message, attempt.task
    assert msg is not None and task is not None
    delivery = attempt.delivery
    if attempt.cause is not None:  # prefetched, never started: back as it was
        return Settlement.release(delivery, task=msg.task, attempt=msg.attempt)
    attempt.ran = True
    settlement = await _run(app, attempt, msg, task)
    cause = attempt.cause
    if cause is None or settlement.outcome is Outcome.SUCCEEDED:
        return settlement
    if cause == SHUTDOWN:
        return Settlement.release(delivery, task=msg.task, attempt=msg.attempt)
    return Settlement.cancelled(
        delivery, task=msg.task, attempt=msg.attempt, result_ttl=task.result_ttl
    )


async def _run(app: App, attempt: Attempt, msg: Message, task: Task[Any, Any]) -> Settlement:
    delivery, scope = attempt.delivery, attempt.scope
    backend = app.backend
    timeout = task.timeout if msg.timeout is None else msg.timeout
    limit = _UNLIMITED
    if timeout is not None or backend.ack_deadline is not None:  # most jobs have neither
        limit = time_limit(backend, timeout, attempt.received)
        if limit.deadline is not None:
            scope.deadline = limit.deadline
    result: Any = None
    try:
        with scope:
            result = await _call(task, msg)
    except Retry as exc:
        return _failed(app, attempt, msg, task, error_info(exc), exc.delay)
    except Snooze as exc:
        wake_at = time.time() + exc.delay
        again = msg.snoozed(wake_at).encode(app.serializer)
        return Settlement.snooze(
            delivery, task=msg.task, attempt=msg.attempt, body=again, eta=wake_at
        )
    except Reject as exc:
        attempt.exception = exc
        return _dead(attempt, msg, task, ErrorInfo("Reject", exc.reason))
    except BadArguments as exc:
        attempt.exception = exc
        return _dead(attempt, msg, task, ErrorInfo("BadArguments", str(exc)))
    except Exception as exc:
        attempt.exception = exc
        if not task.retries_error(exc):
            return _dead(attempt, msg, task, error_info(exc))
        return _failed(app, attempt, msg, task, error_info(exc), None)
    if scope.cancelled_caught:
        if attempt.cause is None:  # no one asked: the deadline passed
            expired = TimeoutError(limit.message())
            attempt.exception = expired
            error = ErrorInfo("TimeoutError", str(expired))
            if not task.retries_error(expired):
                return _dead(attempt, msg, task, error)
            return _failed(app, attempt, msg, task, error, None)
        # Cancelled on purpose: execute() turns it into what the cause calls for.
        return Settlement.cancelled(
            delivery, task=msg.task, attempt=msg.attempt, result_ttl=task.result_ttl
        )
    try:
        body = app.serializer.dumps(result) if task.store_result else None
    except TypeError as exc:
        # Running it again would give the same unserialisable value: no retry.
        return _dead(attempt, msg, task, ErrorInfo("ResultNotSerializable", str(exc)))
    return Settlement.succeeded(
        delivery, task=msg.task, attempt=msg.attempt, result=body, result_ttl=task.result_ttl
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
    attempt: Attempt,
    msg: Message,
    task: Task[Any, Any],
    error: ErrorInfo,
    delay: float | None,
) -> Settlement:
    retries = task.retries if msg.retries is None else msg.retries
    if msg.attempt > retries:
        return _dead(attempt, msg, task, error)
    if delay is None:
        delay = task.backoff.delay(msg.attempt)
    eta = time.time() + delay
    body = msg.next_attempt(eta).encode(app.serializer)
    return Settlement.retry(
        attempt.delivery, task=msg.task, attempt=msg.attempt, body=body, eta=eta, error=error
    )


def _dead(attempt: Attempt, msg: Message, task: Task[Any, Any], error: ErrorInfo) -> Settlement:
    return Settlement.dead(
        attempt.delivery,
        task=msg.task,
        attempt=msg.attempt,
        error=error,
        result_ttl=task.result_ttl,
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
