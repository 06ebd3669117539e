"""What observability costs a Redis worker's drain of no-op jobs, each mode against
``untraced`` (the tracing calls stubbed out, no metrics, no log handler):

* ``no-sdk``: asyncq as installed, with no OpenTelemetry SDK configured (asyncq checks
  once per job and does nothing else);
* ``sdk``: the tracing SDK with a batch span processor exporting to nowhere;
* ``sampled``: the same, keeping one trace in ten (``ParentBased(TraceIdRatioBased(0.1))``,
  as a busy deployment would configure it);
* ``metrics``: the metrics SDK with the Prometheus reader ``asyncq run --metrics-port``
  uses (recording only: nothing scrapes it);
* ``logs``: the job outcome line of every job, formatted as ``asyncq run`` does, written
  to /dev/null;
* ``all``: sdk + metrics + logs as JSON (``--log-format json``).

Each mode runs in a fresh process, alternating, and the median of the repeats is printed.
Last comes the floor of the ``sdk`` mode: what the SDK alone takes for the one span a job
needs (extract its parent, start, make current, end into the batch processor), against
the time an untraced job takes.

    .venv/bin/python benchmarks/observability_overhead.py          # 20,000 jobs, 3 repeats
    .venv/bin/python benchmarks/observability_overhead.py --jobs 5000 --repeat 1 --modes sdk

Uses Redis at 127.0.0.1:6379, db 12, under a prefix of its own that it deletes after.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence

import anyio
import redis

import asyncq

URL = "redis://127.0.0.1:6379/12"
MODES = ("untraced", "no-sdk", "sdk", "sampled", "metrics", "logs", "all")


def sdk(ratio: float = 1.0) -> None:
    """Set the global tracer provider: the SDK's, batching spans to an exporter to nowhere,
    keeping ``ratio`` of the traces."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    class Nowhere(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider(sampler=ParentBased(TraceIdRatioBased(ratio)))
    provider.add_span_processor(BatchSpanProcessor(Nowhere()))
    trace.set_tracer_provider(provider)


def meters() -> None:
    """Set the global meter provider: the SDK's, read by the Prometheus exporter."""
    from opentelemetry import metrics
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from opentelemetry.sdk.metrics import MeterProvider

    metrics.set_meter_provider(MeterProvider(metric_readers=[PrometheusMetricReader()]))


def job_logs(log_format: str) -> None:
    """Log what ``asyncq run --log-format FORMAT`` logs, to /dev/null."""
    from asyncq.cli.common import configure_logging

    sys.stderr = open(os.devnull, "w")  # for the rest of this one-mode process
    configure_logging("info", log_format)


def drain(mode: str, jobs: int) -> float:
    """Enqueue ``jobs`` no-op jobs, drain them with one worker; jobs per second."""
    from asyncq import tracing

    if mode == "untraced":  # the code path with tracing compiled out, for the baseline
        tracing._tracer = lambda: None  # what active() and process_span() ask
    if mode in ("sdk", "all"):
        sdk()
    if mode == "sampled":
        sdk(0.1)
    if mode in ("metrics", "all"):
        meters()
    if mode in ("logs", "all"):
        job_logs("json" if mode == "all" else "text")
    prefix = f"bench-tracing-{os.urandom(4).hex()}"
    app = asyncq.App(f"{URL}?prefix={prefix}")

    @app.task
    async def noop() -> None:
        pass

    async def run() -> float:
        async with app:
            for start in range(0, jobs, 1000):
                await noop.enqueue_many([()] * min(1000, jobs - start))
            began = time.perf_counter()
            await app.run_worker(concurrency=100, burst=True)
            return jobs / (time.perf_counter() - began)

    try:
        return anyio.run(run)
    finally:
        with redis.Redis.from_url(URL) as client:
            names = list(client.scan_iter(f"{prefix}:*", count=1000))
            if names:
                client.delete(*names)


def floor(spans: int) -> float:
    """Seconds the SDK itself takes per job span, called directly with no asyncq code:
    the least any tracing of a job can cost with this SDK and processor."""
    from opentelemetry import context, propagate, trace
    from opentelemetry.trace import SpanKind

    sdk()
    tracer = trace.get_tracer("floor")
    headers: dict[str, str] = {}
    with tracer.start_as_current_span("send"):
        propagate.inject(headers)
    attributes = {f"attribute.{i}": "value" for i in range(7)}  # as many as a job's span
    best = float("inf")
    for _ in range(5):
        began = time.perf_counter()
        for _ in range(spans):
            span = tracer.start_span(
                "process", propagate.extract(headers), SpanKind.CONSUMER, attributes
            )
            token = context.attach(trace.set_span_in_context(span))
            context.detach(token)
            span.end()
        best = min(best, (time.perf_counter() - began) / spans)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--modes",
        default=",".join(MODES[1:]),
        help="comma-separated modes to compare with untraced (default: all of them)",
    )
    parser.add_argument("--mode", choices=(*MODES, "floor"), help=argparse.SUPPRESS)  # a child
    args = parser.parse_args()
    if args.mode == "floor":
        print(floor(args.jobs))
        return
    if args.mode:
        print(drain(args.mode, args.jobs))
        return
    modes = ["untraced", *(m for m in args.modes.split(",") if m and m != "untraced")]
    unknown = set(modes) - set(MODES)
    if unknown:
        parser.error(f"unknown modes {sorted(unknown)}; choose from {', '.join(MODES)}")
    rates: dict[str, list[float]] = {mode: [] for mode in modes}
    for _ in range(args.repeat):
        for mode in modes:
            rates[mode].append(float(child(mode, args.jobs)))
    base = statistics.median(rates["untraced"])
    for mode in modes:
        rate = statistics.median(rates[mode])
        runs = ", ".join(f"{r:,.0f}" for r in rates[mode])
        print(f"{mode:>9}: {rate:>8,.0f} jobs/s  ({(1 - rate / base) * 100:+.1f}% cost)  [{runs}]")
    if "sdk" not in modes:
        return
    span = float(child("floor", args.jobs))
    job = 1 / base
    print(
        f"    floor: {span * 1e6:.1f} us of SDK per span, {job * 1e6:.1f} us per untraced job: "
        f"no less than {span / (job + span) * 100:.1f}% cost in sdk mode"
    )


def child(mode: str, jobs: int) -> str:
    """The last line a fresh process running one mode prints."""
    out = subprocess.run(
        [sys.executable, __file__, "--mode", mode, "--jobs", str(jobs)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return out.strip().splitlines()[-1]


if __name__ == "__main__":
    main()
