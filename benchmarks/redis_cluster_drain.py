"""Drain throughput on a Redis Cluster of three masters (and three replicas) beside one
standalone Redis, with one and with three worker processes.

    python benchmarks/redis_cluster_drain.py [--jobs 60000] [--runs 3] [--concurrency 100]

Starts both servers itself on loopback ports of their own (the cluster with
``scripts/redis_cluster.sh``, the standalone one with the same settings: no persistence),
so nothing else shares them. Each run: ``--jobs`` no-op jobs enqueued first
(``enqueue_many``), spread evenly over three queues whose keys lie on the three masters;
then ``--workers`` worker processes (``python benchmarks/redis_cluster_drain.py --worker``,
each serving all three queues at ``--concurrency``) are started, and the drain is timed
from their start until the three queues are empty (read every 20 ms by this process), so
the workers' start-up counts alike on both. The median of ``--runs`` runs is printed for
each setting, with every run's number.

What bounds it on a small machine: every process (six Redis servers, the workers, this
driver) shares the machine's cores, so on two cores the cluster's three masters compete
with the workers that feed them; the cluster's gain shows where each master gets a core
of its own.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import anyio
import redis

import asyncq

ROOT = Path(__file__).resolve().parents[1]


def _queues_on_masters(base: int) -> list[str]:
    """Three queue names whose keys lie on the cluster's three masters."""
    from redis.cluster import RedisCluster

    found: dict[int, str] = {}
    with RedisCluster(host="127.0.0.1", port=base) as client:
        for i in range(1000):
            found.setdefault(client.get_node_from_key(f"{{drain{i}}}").port, f"drain{i}")
            if len(found) == 3:
                return sorted(found.values())
    raise RuntimeError("no three queues on three masters")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _base_port() -> int:
    for base in range(23100, 30000, 10):
        ok = True
        for port in (*range(base, base + 6), *range(base + 10000, base + 10006)):
            with socket.socket() as sock:
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise RuntimeError("no free ports for a cluster")


def worker(url: str, queues: list[str], concurrency: int) -> None:
    app = asyncq.App(url)

    @app.task(name="noop")
    async def noop() -> None:
        pass

    anyio.run(partial(app.run_worker, queues=queues, concurrency=concurrency, handle_signals=True))


async def _fill(url: str, queues: list[str], jobs: int) -> None:
    app = asyncq.App(url)
    noop = app.task(name="noop")(_noop)
    async with app:
        per = jobs // len(queues)
        for q in queues:
            for start in range(0, per, 1000):
                await noop.options(queue=q).enqueue_many([()] * min(1000, per - start))


async def _noop() -> None:
    pass


async def _left(app: asyncq.App, queues: list[str]) -> int:
    stats = await app.backend.queue_stats(queues)
    return sum(s.pending + s.running + s.scheduled for s in stats)


async def _drain(url: str, queues: list[str], jobs: int, workers: int, concurrency: int) -> float:
    await _fill(url, queues, jobs)
    app = asyncq.App(url)
    command = [sys.executable, __file__, "--worker", url, ",".join(queues), str(concurrency)]
    async with app:
        assert await _left(app, queues) == jobs - jobs % len(queues)
        started = time.perf_counter()
        processes = [await anyio.open_process(command) for _ in range(workers)]
        try:
            # Polled: the jobs finish in other processes, which tell this one nothing.
            while await _left(app, queues):  # noqa: ASYNC110
                await anyio.sleep(0.02)
            elapsed = time.perf_counter() - started
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                await process.wait()
                await process.aclose()
        for q in queues:
            await app.backend.remove_queue(q)
    return (jobs - jobs % len(queues)) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=60_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        url, queues, concurrency = args.worker
        worker(url, queues.split(","), int(concurrency))
        return
    directory = Path(tempfile.mkdtemp(prefix="asyncq-cluster-drain-"))
    base = _base_port()
    single = _free_port()
    script = str(ROOT / "scripts" / "redis_cluster.sh")
    server = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(single),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(directory),
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        subprocess.run(["bash", script, "start", str(directory / "cluster"), str(base)], check=True)
        with redis.Redis(port=single) as client:
            deadline = time.monotonic() + 10
            while True:
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
        queues = _queues_on_masters(base)
        targets = {
            "standalone Redis": f"redis://127.0.0.1:{single}/0?prefix=drain",
            "Redis Cluster, 3 masters": f"redis://127.0.0.1:{base}/0?cluster=true&prefix=drain",
        }
        print(
            f"{args.jobs:,} no-op jobs over 3 queues, concurrency {args.concurrency} per "
            f"worker, {os.cpu_count()} CPUs, redis-server "
            f"{redis.Redis(port=single).info()['redis_version']}; median of {args.runs} runs"
        )
        print("| broker | workers | drain (jobs/s) | runs |")
        print("| --- | ---: | ---: | --- |")
        for workers in (1, 3):
            for name, url in targets.items():
                rates = [
                    anyio.run(_drain, url, queues, args.jobs, workers, args.concurrency)
                    for _ in range(args.runs)
                ]
                runs = ", ".join(f"{r:,.0f}" for r in rates)
                print(f"| {name} | {workers} | {statistics.median(rates):,.0f} | {runs} |")
    finally:
        server.terminate()
        server.wait(10)
        subprocess.run(["bash", script, "stop", str(directory / "cluster")], check=False)
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
