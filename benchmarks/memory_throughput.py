"""Throughput of asyncq's own machinery on the in-memory broker: no network, no broker.

    python benchmarks/memory_throughput.py [--jobs 20000] [--concurrency 100]

Measures, in this order, each on a fresh ``memory://`` broker:

1. bulk enqueue: ``task.enqueue_many`` in batches of ``--batch`` jobs;
2. drain: one worker at ``--concurrency`` runs the jobs of step 1 (a no-op handler); timed
   from the worker's start until the last job's result is stored;
3. single enqueue: one ``await task.enqueue()`` per job;

then the process's peak RSS. With ``--tracemalloc`` it also reports the peak of Python
allocations (tracing slows every step down several times, so its rates are not comparable).
The in-memory broker keeps every finished job's record for its ``result_ttl``, so the peak
includes the broker's copy of all the jobs, not only the worker's.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import time
import tracemalloc

import anyio

import asyncq


def make_app(name: str) -> tuple[asyncq.App, asyncq.Task[[], None]]:
    app = asyncq.App(f"memory://{name}")

    @app.task(name="noop")
    async def noop() -> None:
        return None

    return app, noop


def peak_rss_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return peak / (1024 * 1024 if sys.platform == "darwin" else 1024)


def report(what: str, jobs: int, seconds: float) -> None:
    print(f"{what:<34} {jobs:>8} jobs {seconds:8.3f} s {jobs / seconds:>10,.0f} jobs/s")


async def bulk_enqueue(
    task: asyncq.Task[[], None], jobs: int, batch: int
) -> list[asyncq.Job[None]]:
    calls: list[tuple[()]] = [()] * batch
    handles: list[asyncq.Job[None]] = []
    for start in range(0, jobs, batch):
        handles += await task.enqueue_many(calls[: min(batch, jobs - start)])
    return handles


async def single_enqueue(task: asyncq.Task[[], None], jobs: int) -> None:
    for _ in range(jobs):
        await task.enqueue()


async def main(args: argparse.Namespace) -> None:
    n, concurrency = args.jobs, args.concurrency
    print(
        f"asyncq {asyncq.__version__}, Python {platform.python_version()}, "
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs"
    )
    print(f"jobs={n} concurrency={concurrency} batch={args.batch}\n")

    app, noop = make_app("bench-drain")
    async with app:
        start = time.perf_counter()
        jobs = await bulk_enqueue(noop, n, args.batch)
        report(f"enqueue_many (batches of {args.batch})", n, time.perf_counter() - start)

        # Timed until the last result is stored, rather than until a burst worker returns:
        # a burst worker first waits a moment on the empty queue to be sure it is empty.
        # Jobs finish roughly in order, so this loop waits on few of them.
        start = time.perf_counter()
        async with app.worker(concurrency=concurrency) as worker:
            for job in jobs:
                await job.result()
            elapsed = time.perf_counter() - start
        report(f"drain, 1 worker, concurrency {concurrency}", n, elapsed)
        stats = (await app.queue_stats())["default"]
        if worker.processed != n or stats.pending or stats.running or stats.dead:
            raise SystemExit(f"drain incomplete: processed={worker.processed} {stats}")

    app, noop = make_app("bench-single")
    async with app:
        start = time.perf_counter()
        await single_enqueue(noop, n)
        report("enqueue, one await per job", n, time.perf_counter() - start)

    print(f"\npeak RSS {peak_rss_mib():.1f} MiB")
    if tracemalloc.is_tracing():
        _, peak = tracemalloc.get_traced_memory()
        print(f"peak traced Python allocations {peak / 2**20:.1f} MiB")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", "-n", type=int, default=20_000, help="jobs per step")
    parser.add_argument("--concurrency", "-c", type=int, default=100, help="worker slots")
    parser.add_argument("--batch", type=int, default=1_000, help="jobs per enqueue_many")
    parser.add_argument(
        "--tracemalloc", action="store_true", help="also report peak Python allocations"
    )
    args = parser.parse_args()
    if args.jobs < 1 or args.concurrency < 1 or args.batch < 1:
        parser.error("--jobs, --concurrency and --batch must be >= 1")
    return args


if __name__ == "__main__":
    arguments = parse_args()
    if arguments.tracemalloc:
        tracemalloc.start()
    anyio.run(main, arguments)
