"""OpenTelemetry traces of jobs, from the producer into the worker, through job headers.

* Enqueueing one job makes a PRODUCER span ``send <queue>``; its context goes into the
  job's headers (W3C ``traceparent``/``tracestate``, through the global propagator).
* ``enqueue_many`` makes a PRODUCER span ``create <queue>`` per job, whose context goes into
  that job's headers, and one PRODUCER span ``send <queue>`` for the batch, linked to them.
* Each attempt a worker runs is a CONSUMER span ``process <queue>``, whose parent is the
  context from the job's headers, so it is in the producer's trace. An exception is
  recorded on it and sets its status; a retry and a dead-lettering are span events.

Attributes follow OpenTelemetry's messaging conventions (``messaging.system``,
``messaging.destination.name``, ``messaging.message.id``, ``messaging.operation.type``,
``messaging.operation.name``), plus ``asyncq.task`` and ``asyncq.attempt``.

Only the OpenTelemetry API is used, and only when it is installed (``asyncq[otel]``).
Until an SDK sets a tracer provider, ``active()`` is False and nothing here runs: no span,
no header, no cost beyond that one check.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, MutableMapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer

try:
    from opentelemetry import context, propagate, trace
    from opentelemetry.trace import Link, SpanKind, Status, StatusCode
except ImportError:  # the otel extra is not installed: tracing stays off
    trace = None  # type: ignore[assignment]

__all__ = [
    "BatchSpans",
    "active",
    "event",
    "exception",
    "process_span",
    "send_span",
    "trace_id",
]

_SCOPE = "asyncq"

# The last provider seen and its asyncq tracer (None for a no-op provider). The SDK's
# get_tracer costs about as much as the span it makes (a warnings filter, two scope
# objects, a lock), so it runs once per provider, not once per job; keyed on the
# provider's identity, a provider set or swapped later is still the one used.
_cached: tuple[object, Tracer | None] | None = None

_UNKNOWN = object()
# Whether the environment names a provider for OpenTelemetry to load on first use (read
# once: the variable is meant for start-up, not for changing in a running process).
_PROVIDER_FROM_ENV = "OTEL_PYTHON_TRACER_PROVIDER" in os.environ
_get_tracer_provider = None if trace is None else trace.get_tracer_provider

_OFF = nullcontext(None)  # stateless, so one serves every untraced job


def _tracer() -> Tracer | None:
    """The current provider's asyncq tracer, or None while no real provider is set."""
    global _cached
    if trace is None:
        return None
    # Until a provider is set, OpenTelemetry looks one up in os.environ on every call, a
    # few µs per job; the unset global (read where the module keeps it) says the same.
    # (Unless get_tracer_provider was replaced, as tests of tracing do.)
    if (
        trace.get_tracer_provider is _get_tracer_provider
        and getattr(trace, "_TRACER_PROVIDER", _UNKNOWN) is None
        and not _PROVIDER_FROM_ENV
    ):
        return None
    provider = trace.get_tracer_provider()
    cached = _cached
    if cached is not None and cached[0] is provider:
        return cached[1]
    tracer = None
    if not isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider):
        from . import __version__

        tracer = provider.get_tracer(_SCOPE, __version__)
    _cached = (provider, tracer)
    return tracer


def active() -> bool:
    """Whether an OpenTelemetry SDK (or any real tracer provider) is configured."""
    return _tracer() is not None


def _tracer_or_noop() -> Tracer:
    """For spans a caller decided on after ``active()``: should the provider have been
    unset since, they are no-ops rather than an error."""
    return _tracer() or trace.NoOpTracer()


def _attributes(system: str, queue: str, task: str, operation: str) -> dict[str, Any]:
    return {
        "messaging.system": system,
        "messaging.destination.name": queue,
        "messaging.operation.type": operation,
        "messaging.operation.name": operation,
        "asyncq.task": task,
    }


@contextmanager
def send_span(
    system: str, queue: str, task: str, headers: MutableMapping[str, str]
) -> Iterator[Span]:
    """The PRODUCER span of one enqueue; its context is injected into ``headers``."""
    attributes = _attributes(system, queue, task, "send")
    with _tracer_or_noop().start_as_current_span(
        f"send {queue}", kind=SpanKind.PRODUCER, attributes=attributes
    ) as span:
        propagate.inject(headers)
        yield span


class BatchSpans:
    """The spans of one ``enqueue_many``: a ``create`` span per job (ended as soon as its
    context is in the job's headers) and the batch's ``send`` span, linked to them all."""

    def __init__(self, system: str, queue: str, task: str) -> None:
        self._system, self._queue, self._task = system, queue, task
        self._tracer = _tracer_or_noop()  # one call, one tracer for all its spans
        self._links: list[Any] = []

    def create(self, job_id: str, headers: MutableMapping[str, str]) -> None:
        attributes = _attributes(self._system, self._queue, self._task, "create")
        attributes["messaging.message.id"] = job_id
        span = self._tracer.start_span(
            f"create {self._queue}", kind=SpanKind.PRODUCER, attributes=attributes
        )
        propagate.inject(headers, context=trace.set_span_in_context(span))
        self._links.append(Link(span.get_span_context()))
        span.end()

    @contextmanager
    def send(self) -> Iterator[Span]:
        attributes = _attributes(self._system, self._queue, self._task, "send")
        attributes["messaging.batch.message_count"] = len(self._links)
        with self._tracer.start_as_current_span(
            f"send {self._queue}", kind=SpanKind.PRODUCER, attributes=attributes, links=self._links
        ) as span:
            yield span


def process_span(
    system: str, queue: str, task: str, job_id: str, attempt: int, headers: dict[str, str]
) -> AbstractContextManager[Span | None]:
    """The CONSUMER span of one attempt, a child of the context in the job's headers,
    started now and current inside the ``with`` that must follow; a do-nothing context
    manager when tracing is off."""
    tracer = _tracer()
    if tracer is None:
        return _OFF
    span = tracer.start_span(
        f"process {queue}",
        context=propagate.extract(headers),
        kind=SpanKind.CONSUMER,
        attributes={
            "messaging.system": system,
            "messaging.destination.name": queue,
            "messaging.operation.type": "process",
            "messaging.operation.name": "process",
            "asyncq.task": task,
            "messaging.message.id": job_id,
            "asyncq.attempt": attempt,
        },
        record_exception=False,  # recorded where the handler's exception is caught
    )
    return _Current(span)


class _Current:
    """What ``start_as_current_span`` does once its span is started (``use_span`` with
    ``end_on_exit``): the span is current inside the block, an Exception escaping it sets
    the ERROR status, and it ends on exit. One plain object, as the two nested generator
    context managers doing it there cost each job some 10 us more."""

    __slots__ = ("_span", "_token")

    def __init__(self, span: Span) -> None:
        self._span = span

    def __enter__(self) -> Span:
        self._token = context.attach(trace.set_span_in_context(self._span))
        return self._span

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        context.detach(self._token)
        span = self._span
        # Not BaseException: a cancellation or GeneratorExit is no error (as use_span).
        if isinstance(exc, Exception) and span.is_recording():
            span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
        span.end()


def trace_id(span: Span) -> str:
    """The span's trace id as 32 hex digits, as log lines and trace viewers show it."""
    return trace.format_trace_id(span.get_span_context().trace_id)


def exception(span: Span, exc: BaseException) -> None:
    """Record a handler's exception on its attempt's span."""
    span.record_exception(exc)
    span.set_status(Status(StatusCode.ERROR, f"{type(exc).__qualname__}: {exc}"))


def event(span: Span, name: str, attributes: dict[str, Any]) -> None:
    """Mark an outcome (``Outcome.event``: a retry, a dead-lettering) on the attempt's span."""
    span.add_event(name, {k: v for k, v in attributes.items() if v is not None})
