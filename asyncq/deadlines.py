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


@dataclass(frozen=True, slots=True)
class TimeLimit:
    """When an attempt is stopped, and what its error then says."""

    deadline: float | None
    """On anyio's clock; None: never."""
    message: str


def time_limit(backend: Backend, timeout: float | None, received: float) -> TimeLimit:
    """The limit of an attempt starting now, with the task's ``timeout``, of a delivery
    the worker received at ``received`` (anyio's clock)."""
    own = None if timeout is None else anyio.current_time() + timeout
    limit, deadline = ack_limit(backend), backend.ack_deadline
    if limit is None or deadline is None or (own is not None and own <= received + limit):
        return TimeLimit(own, f"job timed out after {timeout} s")
    return TimeLimit(
        received + limit,
        f"job stopped {limit:g} s after its delivery, before the broker takes it back: "
        f"{_describe(backend, deadline)} (give the task a timeout of its own below that, or "
        f"{backend.ack_deadline_hint})",
    )
