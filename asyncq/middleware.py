"""Middleware: code that wraps every enqueue and every attempt, ``App(middleware=[...])``.

A middleware subclasses :class:`Middleware` and overrides ``enqueue``, ``execute``,
``finished``, or several. ``enqueue`` and ``execute`` get the work and ``call_next``, the
rest of the chain, which they await (or not: a middleware may refuse an enqueue by raising,
or settle an attempt without running it); ``finished`` only observes each attempt's outcome,
after the chain, without a coroutine of its own::

    class Tenant(asyncq.Middleware):
        async def enqueue(self, outgoing, call_next):
            for job in outgoing.jobs:
                job.headers["tenant"] = current_tenant.get()
            return await call_next(outgoing)

        async def execute(self, attempt, call_next):
            token = current_tenant.set(attempt.headers.get("tenant", ""))
            try:
                return await call_next(attempt)
            finally:
                current_tenant.reset(token)

The chains are built once, the App's enqueue chain when the App is made and each worker's
execution chain when it starts, from the first middleware (outermost) to the last; only
the methods a middleware overrides join them. asyncq's own job logs, metrics and tracing
are links of the same chains, outside the App's middleware, so a middleware's spans are
children of the attempt's span and its time counts in the attempt's duration:

* enqueue: tracing (a PRODUCER span, its context in each job's headers), then the App's
  middleware, then the encoding and the backend's enqueue;
* execution: tracing (the CONSUMER span), then the App's middleware, then the handler
  (:func:`asyncq.execution.execute`, where the outcome is decided); then the ``finished``
  observers: job logs, metrics (when a meter provider is configured), the App's middleware.

``outgoing.jobs[i].headers`` may be changed on the way in (they travel with the job);
``attempt.message`` is None for a delivery that cannot run (undecodable, unknown task),
which ends DEAD without calling the handler.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from . import tracing
from .attempt import Attempt
from .joblog import job_finished
from .settlement import Outcome, Settlement

if TYPE_CHECKING:
    from .metrics import WorkerMetrics

__all__ = [
    "Attempt",
    "EnqueueNext",
    "ExecutionChain",
    "ExecuteNext",
    "Middleware",
    "Outgoing",
    "OutgoingJob",
    "Settlement",
]

EnqueueNext = Callable[["Outgoing"], Awaitable[list[str]]]
ExecuteNext = Callable[[Attempt], Awaitable[Settlement]]


@dataclass(slots=True)
class OutgoingJob:
    """One job of an enqueue, before it is encoded."""

    id: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    headers: dict[str, str]
    """The job's headers; a middleware may add to them."""


@dataclass(slots=True)
class Outgoing:
    """What one ``enqueue`` (one job) or ``enqueue_many`` (``batch``) sends: jobs of one
    task to one queue. The chain's last step encodes them and returns their ids (an
    existing job's id where an idempotency key matched)."""

    task: str
    queue: str
    jobs: list[OutgoingJob]
    batch: bool
    system: str
    """The broker's name for tracing ("redis", "rabbitmq", ...)."""
    send: Callable[[Outgoing], Awaitable[list[str]]] = field(repr=False)
    """The chain's last step: encode and enqueue (set by the task)."""


class Middleware:
    """Base class of middleware; override ``enqueue``, ``execute``, or both."""

    async def enqueue(self, outgoing: Outgoing, call_next: EnqueueNext) -> list[str]:
        """Around each enqueue: return the job ids ``call_next(outgoing)`` returns."""
        return await call_next(outgoing)

    async def execute(self, attempt: Attempt, call_next: ExecuteNext) -> Settlement:
        """Around each attempt: return the settlement ``call_next(attempt)`` returns."""
        return await call_next(attempt)

    def finished(self, attempt: Attempt, settlement: Settlement) -> None:
        """After each attempt, once its outcome is decided and before it is settled: for a
        middleware that only observes (counts, logs), this costs no coroutine per job."""


T = TypeVar("T")
R = TypeVar("R")


def _chain(
    steps: Sequence[Callable[..., Awaitable[R]]], last: Callable[[T], Awaitable[R]]
) -> Callable[[T], Awaitable[R]]:
    call = last
    for step in reversed(steps):
        # partial, not a closure: calling the chain makes one coroutine per link, no more.
        call = partial(step, call_next=call)
    return call


def _overrides(middleware: Middleware, name: str) -> bool:
    return getattr(type(middleware), name) is not getattr(Middleware, name)


async def _send(outgoing: Outgoing) -> list[str]:
    return await outgoing.send(outgoing)


def enqueue_chain(middleware: Sequence[Middleware]) -> EnqueueNext:
    """The App's enqueue chain: tracing, then ``middleware``, then the send."""
    steps = [TracingLink.enqueue_step] + [m.enqueue for m in middleware if _overrides(m, "enqueue")]
    return _chain(steps, _send)


class ExecutionChain:
    """A worker's execution middleware around ``last`` (the handler's run), built once at
    start, and the observers its ``finished`` hooks make up."""

    __slots__ = ("_observers", "_plain", "_traced")

    def __init__(
        self,
        middleware: Sequence[Middleware],
        last: ExecuteNext,
        *,
        system: str,
        metrics: WorkerMetrics | None,
    ) -> None:
        links: list[Middleware] = [JobLogLink()]
        if metrics is not None:
            links.append(MetricsLink(metrics))
        links += middleware
        steps = [m.execute for m in links if _overrides(m, "execute")]
        self._observers = [m.finished for m in links if _overrides(m, "finished")]
        # Two chains, with the tracing link and without: a provider set while the worker
        # runs is used from the next attempt on, and an untraced attempt pays one check.
        self._plain = _chain(steps, last)
        self._traced = _chain([TracingLink(system).execute, *steps], last)

    async def __call__(self, attempt: Attempt) -> Settlement:
        chain = self._traced if tracing.active() else self._plain
        settlement = await chain(attempt)
        for observe in self._observers:
            observe(attempt, settlement)
        return settlement


class JobLogLink(Middleware):
    """One log line per attempt (see :mod:`asyncq.joblog`)."""

    def finished(self, attempt: Attempt, settlement: Settlement) -> None:
        duration = time.time() - attempt.started_at
        # Only a prefetched job handed back at shutdown never started.
        started = attempt.ran or settlement.outcome is not Outcome.RELEASE
        job_finished(settlement, settlement.task, started, duration, attempt.trace_id)


class MetricsLink(Middleware):
    """Queue wait, processing time and outcome counts (see :mod:`asyncq.metrics`)."""

    def __init__(self, metrics: WorkerMetrics) -> None:
        self._metrics = metrics

    def finished(self, attempt: Attempt, settlement: Settlement) -> None:
        metrics, queue, started = self._metrics, attempt.queue, attempt.started_at
        message = attempt.message
        if message is not None and attempt.ran:
            ready_at = max(message.enqueued_at, message.eta or 0.0)
            metrics.started(queue, settlement.task, started - ready_at)
        metrics.finished(queue, settlement.task, settlement.outcome, time.time() - started)


class TracingLink(Middleware):
    """The PRODUCER span of an enqueue and the CONSUMER span of an attempt (see
    :mod:`asyncq.tracing`); passes straight on while no tracer provider is set."""

    def __init__(self, system: str) -> None:
        self._system = system

    @staticmethod
    async def enqueue_step(outgoing: Outgoing, call_next: EnqueueNext) -> list[str]:
        if not tracing.active():
            return await call_next(outgoing)
        system, queue, task = outgoing.system, outgoing.queue, outgoing.task
        if not outgoing.batch:
            (job,) = outgoing.jobs
            with tracing.send_span(system, queue, task, job.headers) as span:
                span.set_attribute("messaging.message.id", job.id)
                return await call_next(outgoing)
        spans = tracing.BatchSpans(system, queue, task)
        for job in outgoing.jobs:
            spans.create(job.id, job.headers)
        with spans.send():
            return await call_next(outgoing)

    async def execute(self, attempt: Attempt, call_next: ExecuteNext) -> Settlement:
        msg = attempt.message
        if msg is None or attempt.cause is not None:  # refused, or handed back unstarted
            return await call_next(attempt)
        with tracing.process_span(
            self._system, msg.queue, msg.task, msg.id, msg.attempt, msg.headers
        ) as span:
            if span is None:
                return await call_next(attempt)
            attempt.trace_id = tracing.trace_id(span)
            settlement = await call_next(attempt)
            if attempt.exception is not None:
                tracing.exception(span, attempt.exception)
            outcome = settlement.outcome
            if outcome.event is not None:
                error = settlement.error
                attributes = (
                    {"asyncq.retry.eta": settlement.eta}
                    if outcome is Outcome.RETRY
                    else {"asyncq.snooze.eta": settlement.eta}
                    if outcome is Outcome.SNOOZE
                    else {"error.type": error and error.type}
                )
                tracing.event(span, outcome.event, attributes)
            return settlement
