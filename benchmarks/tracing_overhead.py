"""What tracing costs a Redis worker's drain of no-op jobs: with no OpenTelemetry SDK
configured (asyncq checks once per job and does nothing else), and with the SDK and a
batch span processor exporting to nowhere. Each mode runs in a fresh process, alternating,
and the median of the repeats is printed.

    .venv/bin/python benchmarks/tracing_overhead.py                # 20,000 jobs, 3 repeats
    .venv/bin/python benchmarks/tracing_overhead.py --jobs 5000 --repeat 1

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
MODES = ("untraced", "no-sdk", "sdk")


def drain(mode: str, jobs: int) -> float:
    """Enqueue ``jobs`` no-op jobs, drain them with one worker; jobs per second."""
    from asyncq import tracing

    if mode == "untraced":  # the code path with tracing compiled out, for the baseline
        tracing.active = lambda: False
    elif mode == "sdk":
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            SpanExporter,
            SpanExportResult,
        )

        class Nowhere(SpanExporter):
            def export(self, spans: Sequence[object]) -> SpanExportResult:  # type: ignore[override]
                return SpanExportResult.SUCCESS

        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(Nowhere()))
        trace.set_tracer_provider(provider)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)  # one child run
    args = parser.parse_args()
    if args.mode:
        print(drain(args.mode, args.jobs))
        return
    rates: dict[str, list[float]] = {mode: [] for mode in MODES}
    for _ in range(args.repeat):
        for mode in MODES:
            out = subprocess.run(
                [sys.executable, __file__, "--mode", mode, "--jobs", str(args.jobs)],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            rates[mode].append(float(out.strip().splitlines()[-1]))
    base = statistics.median(rates["untraced"])
    for mode in MODES:
        rate = statistics.median(rates[mode])
        print(f"{mode:>9}: {rate:>8,.0f} jobs/s  ({(1 - rate / base) * 100:+.1f}% cost)")


if __name__ == "__main__":
    main()
