"""A rate-limited task on Redis: the rate it achieves, the most starts in any window, and
what holding jobs back costs.

    .venv/bin/python benchmarks/limits_rate.py                         # 10,000 jobs at 1000/s
    .venv/bin/python benchmarks/limits_rate.py --jobs 20000 --rate 2000/s --workers 2

``--jobs`` no-op jobs of a task with ``rate_limit=--rate`` are enqueued at once (so nearly
all of them are held back at first), then ``--workers`` worker processes of
``--concurrency`` each drain them. Each start is timed by its handler; the report gives the
achieved rate (the starts over their span plus one window: a sliding window lets ``limit``
start at the opening of each), the most starts
in any sliding window of the limit's length (must not exceed the limit) twice: by the
permits the limiter granted (its log in Redis, scored by the server's clock, copied every
0.2 s while the workers run, so no entry leaves before it is seen) and by the handlers'
clocks (a start reaches its handler some milliseconds after its permit, by a delay that
varies, so this count can exceed the limit by a start or two while the permits do not),
how many times a
job was sent back to wait (``asyncq_jobs_limited_total``: per job, the cost of the
limiter's line), and the workers' CPU seconds per job. Redis must answer at ``--url``
(db 12 by default); the benchmark's keys are removed at the end.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time

import anyio
import redis as redis_py
import redis.asyncio as redis

import asyncq
from asyncq.limits import RateLimit

QUEUE = "limits-bench"


def build_app(url: str, rate: str, ledger_url: str, ledger: str) -> asyncq.App:
    app = asyncq.App(url)
    client: redis.Redis | None = None

    @app.task(name="limited", queue=QUEUE, rate_limit=rate, store_result=False)
    async def limited(n: int) -> None:
        nonlocal client
        if client is None:
            client = redis.Redis.from_url(ledger_url)
        await client.rpush(ledger, repr(time.time()))

    return app


def most_in_a_window(times: list[float], per: float) -> int:
    most, j = 0, 0
    for i in range(len(times)):
        while times[i] - times[j] >= per:
            j += 1
        most = max(most, i - j + 1)
    return most


async def worker_main(args: argparse.Namespace) -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    app = build_app(args.url, args.rate, args.ledger_url, args.ledger)
    async with app:
        await app.run_worker(
            concurrency=args.concurrency,
            queues=[QUEUE],
            burst=True,
            meter_provider=MeterProvider(metric_readers=[reader]),
        )
    usage = resource.getrusage(resource.RUSAGE_SELF)
    held_back = 0
    data = reader.get_metrics_data()
    for resource_metrics in data.resource_metrics if data else ():
        for scope in resource_metrics.scope_metrics:
            for metric in scope.metrics:
                if metric.name == "asyncq.jobs.limited":
                    held_back += sum(int(p.value) for p in metric.data.data_points)
    print(f"held_back {held_back} cpu {usage.ru_utime + usage.ru_stime}", flush=True)


async def main(args: argparse.Namespace) -> None:
    limit = RateLimit.parse(args.rate)
    ledger = f"limits-bench:{os.getpid()}"
    url = f"{args.url}?prefix=limits-bench-{os.getpid()}"
    app = build_app(url, args.rate, args.url, ledger)
    r = redis.Redis.from_url(args.url)
    async with app:
        task = app.tasks["limited"]
        for start in range(0, args.jobs, 1000):
            await task.enqueue_many([(n,) for n in range(start, min(start + 1000, args.jobs))])
        command = [
            sys.executable, __file__, "--worker", "--url", url, "--rate", args.rate,
            "--concurrency", str(args.concurrency), "--ledger", ledger,
            "--ledger-url", args.url,
        ]  # fmt: skip
        began = time.time()
        outputs: list[str] = []
        permits: dict[bytes, float] = {}
        prefix = url.rsplit("=", 1)[1]

        async def copy_permit_log(stop: anyio.Event) -> None:
            # The limiter's log holds the starts of the last `per` seconds: copied more
            # often than that, every permit it granted is seen.
            logs: list[bytes] = []
            while not stop.is_set():
                if not logs:
                    logs = [
                        key
                        async for key in r.scan_iter(f"{prefix}:limit:*")
                        if not key.endswith(b":wait")
                    ]
                for log in logs:
                    for member, score in await r.zrange(log, 0, -1, withscores=True):
                        permits[member] = score / 1e6
                with anyio.move_on_after(min(0.2, limit.per / 5)):
                    await stop.wait()

        async def run_worker() -> None:
            done = await anyio.run_process(command, stderr=None)
            outputs.append(done.stdout.decode())

        with anyio.fail_after(args.jobs / limit.limit * limit.per + 120):
            stop = anyio.Event()
            async with anyio.create_task_group() as outer:
                outer.start_soon(copy_permit_log, stop)
                async with anyio.create_task_group() as tg:
                    for _ in range(args.workers):
                        tg.start_soon(run_worker)
                stop.set()
        cpu, held_back = 0.0, 0
        for out in outputs:
            words = out.split()
            cpu += float(words[-1])
            held_back += int(words[-3])
        took = time.time() - began
        starts = sorted(float(x) for x in await r.lrange(ledger, 0, -1))
        stats = await app.queue_stats([QUEUE])
        await app.remove_queue(QUEUE)
    await r.delete(ledger)
    async for key in r.scan_iter(f"{prefix}:*"):
        await r.delete(key)
    assert len(starts) == args.jobs, (len(starts), stats)
    # A sliding window lets `limit` start at the opening of each window: n starts span
    # (n / limit - 1) windows, so the rate they make is n over their span plus one window.
    achieved = len(starts) / (starts[-1] - starts[0] + limit.per)
    nominal = limit.limit / limit.per
    print(
        f"asyncq {asyncq.__version__}, redis-py {redis_py.__version__}, {args.workers} worker "
        f"process(es) x concurrency {args.concurrency}, rate_limit={args.rate!r}"
    )
    print(
        f"  {args.jobs:,} jobs in {took:.2f} s; achieved {achieved:,.1f} starts/s "
        f"({achieved / nominal:.1%} of the limit's {nominal:,.0f}/s)"
    )
    granted = sorted(permits.values())
    print(
        f"  most starts in any {limit.per:g}-s window (limit {limit.limit}): "
        f"{most_in_a_window(granted, limit.per)} by the limiter's permits "
        f"({len(granted):,} seen), {most_in_a_window(starts, limit.per)} by the handlers' clocks"
    )
    print(f"  held back {held_back:,} times: {held_back / args.jobs:.2f} per job")
    print(f"  worker CPU: {cpu:.2f} s, {cpu / args.jobs * 1e6:,.0f} us per job")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default="redis://127.0.0.1:6379/12")
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--rate", default="1000/s")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--ledger", help=argparse.SUPPRESS)
    parser.add_argument("--ledger-url", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    anyio.run(worker_main if arguments.worker else main, arguments)
