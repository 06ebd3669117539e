"""asyncq's OpenTelemetry spans, printed to the console: one trace from producer to worker.

    python examples/otel_console.py

A "handle request" span stands for a web handler; inside it one job is enqueued (a
PRODUCER span ``send default``) and a worker in this process runs it (a CONSUMER span
``process default``). The SDK prints each span as JSON when it ends; the summary at the
end shows all three in one trace, each the parent of the next. Needs ``asyncq[otel]``.

In a real deployment, swap ConsoleSpanExporter for an OTLP exporter and a
BatchSpanProcessor; producers and workers then only need the same propagator (the
default, W3C trace context) for their spans to join up.
"""

from __future__ import annotations

import sys

import anyio

import asyncq

try:
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
except ImportError as exc:  # the extra is not installed: say what to install, not a traceback
    sys.exit(f"this example needs the OpenTelemetry SDK: pip install 'asyncq[otel]' ({exc})")

app = asyncq.App("memory://otel-console")


@app.task
async def resize(image: str, width: int) -> str:
    # The handler runs inside the "process default" span: spans it starts are children.
    return f"{image}@{width}px"


async def main() -> None:
    async with app, app.worker(concurrency=1):
        tracer = trace.get_tracer("shop.web")
        with tracer.start_as_current_span("handle request", kind=trace.SpanKind.SERVER):
            # The current span is the parent of "send default"; its context travels in
            # the job's headers to the worker, which makes "process default" its child.
            job = await resize.enqueue("cat.png", 320)
            print(f"resize -> {await job.result(timeout=5)}")


def print_summary(exporter: InMemorySpanExporter) -> None:
    """One line per span, oldest first: one trace id, and each span's parent is the span
    on the line above."""
    for span in sorted(exporter.get_finished_spans(), key=lambda s: s.start_time or 0):
        context, parent = span.get_span_context(), span.parent
        assert context is not None  # an SDK span always has one
        print(
            f"span {span.name!r:18} kind={span.kind.name:8} "
            f"trace={trace.format_trace_id(context.trace_id)} "
            f"id={trace.format_span_id(context.span_id)} "
            f"parent={trace.format_span_id(parent.span_id) if parent else '-'}"
        )


if __name__ == "__main__":
    provider = TracerProvider(resource=Resource.create({"service.name": "otel-console"}))
    # Simple (not batch) processors export as each span ends, so the output is in order.
    provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
    finished = InMemorySpanExporter()  # kept for the summary below
    provider.add_span_processor(SimpleSpanProcessor(finished))
    # Set before the first enqueue: without a provider, asyncq makes no spans or headers.
    trace.set_tracer_provider(provider)
    anyio.run(main)
    provider.shutdown()  # with a BatchSpanProcessor, this exports the spans still queued
    print("spans, oldest first:")
    print_summary(finished)
    print("done")
