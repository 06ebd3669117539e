"""How long each dashboard page takes with a deep queue and a deep dead-letter queue.

    .venv/bin/python benchmarks/web_pages.py [--broker URL] [--jobs 10000] [--dead 10000]

Fills a broker of its own (Redis db 15 under a fresh prefix by default; any asyncq URL with
``--broker``) with ``--jobs`` queued jobs, ``--dead`` dead letters (a worker runs that many
jobs of a task that always fails), a thousand scheduled ones and a retrying one, then
loads every page of ``asyncq.web.create_dashboard`` ``--rounds`` times through httpx's ASGI
transport (the server's own time: rendering and the broker's round trips, no network) and
prints the median and the slowest load of each. The target: every page under 300 ms.
What it made is deleted at the end (Redis keys under its prefix; a PostgreSQL schema is
the URL's own and is left to you).
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import time

import anyio
import httpx

import asyncq
from asyncq.web import create_dashboard

DEFAULT_REDIS = "redis://127.0.0.1:6379/15"


def build(url: str) -> tuple[asyncq.App, asyncq.Task[[int], None], asyncq.Task[[int], None]]:
    app = asyncq.App(url)

    @app.task(name="report")
    async def report(n: int) -> None:
        pass

    @app.task(name="webhook", retries=0)
    async def webhook(n: int) -> None:
        raise ConnectionError(f"endpoint {n} refused the delivery")

    return app, report, webhook


async def fill(app: asyncq.App, report: asyncq.Task[[int], None], webhook: asyncq.Task[[int], None],
               jobs: int, dead: int) -> dict[str, str]:  # fmt: skip
    started = time.perf_counter()
    last_dead = ""
    for start in range(0, dead, 1000):
        handles = await webhook.options(queue="hooks").enqueue_many(
            [(n,) for n in range(start, min(start + 1000, dead))]
        )
        last_dead = handles[-1].id
    await app.run_worker(queues=["hooks"], concurrency=100, burst=True)
    stats = (await app.queue_stats(["hooks"]))["hooks"]
    print(f"  {stats.dead:,} dead letters in {time.perf_counter() - started:.1f} s", flush=True)
    started = time.perf_counter()
    for start in range(0, jobs, 1000):
        await report.enqueue_many([(n,) for n in range(start, min(start + 1000, jobs))])
    await report.options(delay=3600).enqueue_many([(n,) for n in range(1000)])
    queued = await report.enqueue(-1)
    print(f"  {jobs:,} queued, 1,000 scheduled in {time.perf_counter() - started:.1f} s")
    # The newest dead letter: found by id alone, it is the last of the whole queue's pages.
    return {"queued": queued.id, "dead": last_dead}


async def main() -> None:
    logging.getLogger("asyncq.job").setLevel(logging.CRITICAL)  # 10,000 deaths, on purpose
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--broker", help=f"asyncq URL (default {DEFAULT_REDIS}?prefix=...)")
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--dead", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    prefix = f"webbench{os.urandom(4).hex()}"
    url = args.broker or f"{DEFAULT_REDIS}?prefix={prefix}"
    app, report, webhook = build(url)
    print(f"broker {url}; Python {sys.version.split()[0]}")
    try:
        async with app:
            ids = await fill(app, report, webhook, args.jobs, args.dead)
            pages = {
                "overview": "/",
                "overview (live part)": "/live/overview",
                "queue, queued": "/queues/default?status=queued",
                "queue, scheduled": "/queues/default?status=scheduled",
                "queue, filtered by task": "/queues/default?status=queued&task=report",
                "job (queued)": f"/jobs/{ids['queued']}?queue=default",
                "job (dead, by id only)": f"/jobs/{ids['dead']}",
                "dead letters": "/dead/hooks",
                "dead letters, next page": None,
                "dead letters, filtered by age": "/dead/hooks?newer_than=3600",
                "workers": "/workers",
                "schedules": "/schedules",
                "API overview": "/api/overview",
            }
            transport = httpx.ASGITransport(app=create_dashboard(app))  # type: ignore[arg-type]
            async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
                first = (await client.get("/api/dead/hooks")).json()
                pages["dead letters, next page"] = f"/dead/hooks?after={first['next']}"
                print("\n| page | median (ms) | slowest (ms) |\n| --- | ---: | ---: |")
                worst = 0.0
                for name, path in pages.items():
                    assert path is not None
                    times = []
                    for _ in range(args.rounds):
                        started = time.perf_counter()
                        answer = await client.get(path)
                        times.append((time.perf_counter() - started) * 1000)
                        assert answer.status_code == 200, (path, answer.status_code)
                    worst = max(worst, max(times))
                    print(f"| {name} | {statistics.median(times):.1f} | {max(times):.1f} |")
                print(f"\nslowest load of any page: {worst:.1f} ms (target: under 300 ms)")
    finally:
        if args.broker is None:
            import redis

            client = redis.Redis.from_url(DEFAULT_REDIS)
            for key in client.scan_iter(f"{prefix}*", count=1000):
                client.delete(key)


if __name__ == "__main__":
    anyio.run(main)
