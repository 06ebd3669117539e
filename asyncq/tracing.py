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

from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager, nullcontext
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.trace import Span

try:
    from opentelemetry import propagate, trace
    from opentelemetry.trace import Link, SpanKind, Status, StatusCode
except ImportError:  # the otel extra is not installed: tracing stays off
    trace = None  # type: ignore[assignment]

__all__ = ["active", "batch_spans", "exception", "outcome", "process_span", "send_span"]

_SCOPE = "asyncq"


def active() -> bool:
    """Whether an OpenTelemetry SDK (or any real tracer provider) is configured."""
    if trace is None:
        return False
    provider = trace.get_tracer_provider()
    return not isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider)


def _tracer() -> Any:
    from . import __version__

    return trace.get_tracer(_SCOPE, __version__)


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
    with _tracer().start_as_current_span(
        f"send {queue}", kind=SpanKind.PRODUCER, attributes=attributes
    ) as span:
        propagate.inject(headers)
        yield span


class BatchSpans:
    """The spans of one ``enqueue_many``: a ``create`` span per job (ended as soon as its
    context is in the job's headers) and the batch's ``send`` span, linked to them all."""

    def __init__(self, system: str, queue: str, task: str) -> None:
        self._system, self._queue, self._task = system, queue, task
        self._links: list[Any] = []

    def create(self, job_id: str, headers: MutableMapping[str, str]) -> None:
        attributes = _attributes(self._system, self._queue, self._task, "create")
        attributes["messaging.message.id"] = job_id
        span = _tracer().start_span(
            f"create {self._queue}", kind=SpanKind.PRODUCER, attributes=attributes
        )
        propagate.inject(headers, context=trace.set_span_in_context(span))
        self._links.append(Link(span.get_span_context()))
        span.end()

    @contextmanager
    def send(self) -> Iterator[Span]:
        attributes = _attributes(self._system, self._queue, self._task, "send")
        attributes["messaging.batch.message_count"] = len(self._links)
        with _tracer().start_as_current_span(
            f"send {self._queue}", kind=SpanKind.PRODUCER, attributes=attributes, links=self._links
        ) as span:
            yield span


def batch_spans(system: str, queue: str, task: str) -> BatchSpans:
    return BatchSpans(system, queue, task)


def process_span(
    system: str, queue: str, task: str, job_id: str, attempt: int, headers: dict[str, str]
) -> Any:
    """The CONSUMER span of one attempt, a child of the context in the job's headers; a
    do-nothing context manager when tracing is off."""
    if not active():
        return nullcontext(None)
    attributes = _attributes(system, queue, task, "process")
    attributes["messaging.message.id"] = job_id
    attributes["asyncq.attempt"] = attempt
    return _tracer().start_as_current_span(
        f"process {queue}",
        context=propagate.extract(headers),
        kind=SpanKind.CONSUMER,
        attributes=attributes,
        record_exception=False,  # recorded where the handler's exception is caught
        set_status_on_exception=True,
    )


def exception(span: Span | None, exc: BaseException) -> None:
    """Record a handler's exception on its attempt's span."""
    if span is not None:
        span.record_exception(exc)
        span.set_status(Status(StatusCode.ERROR, f"{type(exc).__qualname__}: {exc}"))


def outcome(span: Span | None, outcome: str, **attributes: Any) -> None:
    """Mark a retry or dead-lettering on the attempt's span as an event."""
    if span is not None:
        span.add_event(f"asyncq.{outcome}", {k: v for k, v in attributes.items() if v is not None})
