"""How long an attempt may run: its task's timeout, and the broker's acknowledgement deadline.

Some brokers take a delivery back from a worker that holds it unacknowledged too long,
however alive the worker is, and deliver it again (RabbitMQ's ``consumer_timeout``, 30
minutes by default): the job would run twice at once, which the contract rules out ("a
long job is never taken from a live worker"). Such a backend says so in
``Backend.ack_deadline``, and the worker keeps every attempt inside it:

* at start, a served task whose ``timeout`` does not fit is a ``ConfigurationError``;
* every attempt is stopped, as a timeout, before the deadline of its delivery passes:
  retried or dead-lettered by its task's policy, instead of being run twice.

The deadline counts from the delivery, not from the start of the attempt: a prefetched job
may have waited for a free slot. A margin is kept back for the attempt's settlement (a
retry or dead letter to publish, a result to store, the ack) to reach the broker in time.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio

from .errors import ConfigurationError

if TYPE_CHECKING:
    from .backend import Backend
    from .task import Task

__all__ = ["TimeLimit", "ack_limit", "check_timeouts", "time_limit"]


def ack_margin(deadline: float) -> float:
    """What is kept back from the deadline for the settlement: a tenth, at most a minute."""
    return min(deadline / 10, 60.0)


def ack_limit(backend: Backend) -> float | None:
    """Seconds after its delivery an attempt is stopped at the latest; None: no limit."""
    deadline = backend.ack_deadline
    if deadline is None:
        return None
    return deadline - ack_margin(deadline)


def _describe(backend: Backend, deadline: float) -> str:
    return f"{backend.ack_deadline_name} is {deadline:g} s"


def check_timeouts(backend: Backend, tasks: Iterable[Task[Any, Any]]) -> str | None:
    """Refuse a task whose timeout the broker's deadline does not allow; otherwise say (for
    the worker's start-up log) how long attempts may run, or None where nothing limits them."""
    deadline, limit = backend.ack_deadline, ack_limit(backend)
    if deadline is None or limit is None:
        return None
    for task in tasks:
        if task.timeout is not None and task.timeout > limit:
            raise ConfigurationError(
                f"task {task.name!r} has timeout={task.timeout:g} s, but "
                f"{_describe(backend, deadline)}: the broker would take a job of it back from "
                "its worker and run it again while the first run goes on. Give the task a "
                f"timeout of at most {limit:g} s (the deadline less {ack_margin(deadline):g} s "
                f"for the job's settlement to reach the broker), or {backend.ack_deadline_hint}"
            )
    return (
        f"{_describe(backend, deadline)}: attempts are stopped as timed out {limit:g} s after "
        "their delivery at the latest, also those of tasks without a timeout"
    )


@dataclass(slots=True)
class TimeLimit:
    """When an attempt is stopped, and why."""

    deadline: float | None
    """On anyio's clock; None: never."""
    timeout: float | None = None
    """The task's timeout, when that is what stops the attempt."""
    backend: Backend | None = None
    """The backend whose ack deadline stops the attempt first, if it does."""

    def message(self) -> str:
        """The error of an attempt this limit stopped."""
        backend = self.backend
        if backend is None or backend.ack_deadline is None:
            return f"job timed out after {self.timeout} s"
        deadline = backend.ack_deadline
        return (
            f"job stopped {ack_limit(backend):g} s after its delivery, before the broker takes "
            f"it back: {_describe(backend, deadline)} (give the task a timeout of its own below "
            f"that, or {backend.ack_deadline_hint})"
        )


_UNLIMITED = TimeLimit(None)


def time_limit(backend: Backend, timeout: float | None, received: float) -> TimeLimit:
    """The limit of an attempt starting now, with the task's ``timeout``, of a delivery
    the worker received at ``received`` (``time.monotonic()``).

    Per job, so cheap: anyio's clock (a couple of microseconds a reading) is read only
    where there is a limit, as before there were ack deadlines.
    """
    limit = ack_limit(backend)
    if limit is None:
        if timeout is None:
            return _UNLIMITED
        return TimeLimit(anyio.current_time() + timeout, timeout)
    left = received + limit - time.monotonic()  # what the broker still allows
    if timeout is not None and timeout <= left:
        return TimeLimit(anyio.current_time() + timeout, timeout)
    return TimeLimit(anyio.current_time() + left, timeout, backend)
