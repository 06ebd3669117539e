"""A worker's memory in front of a deep Redis queue: enqueue a million no-op jobs, then run
one worker process on them and sample its resident memory (VmRSS) as it drains.

The worker asks Redis only for as many jobs as it has free slots, so its memory should not
depend on the queue's depth: the peak printed here is the number to watch.

    .venv/bin/python benchmarks/redis_deep_queue.py              # 1,000,000 jobs
    .venv/bin/python benchmarks/redis_deep_queue.py --jobs 200000 --seconds 5

Uses Redis at 127.0.0.1:6379, db 12, under a key prefix of its own that it deletes after.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import anyio
import redis

import asyncq

DB_URL = "redis://127.0.0.1:6379/12"
HERE = Path(__file__).resolve().parent

APP_MODULE = """
import asyncq, os
app = asyncq.App(os.environ["DEEP_QUEUE_URL"])

@app.task(name="noop")
async def noop() -> None:
    pass
"""


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def fill(url: str, jobs: int, batch: int) -> float:
    app = asyncq.App(url)

    @app.task(name="noop")
    async def noop() -> None:
        pass

    started = time.perf_counter()
    async with app:
        for done in range(0, jobs, batch):
            await noop.enqueue_many([()] * min(batch, jobs - done))
            if (done // batch) % 50 == 0:
                print(f"\r  enqueued {done + batch:,} / {jobs:,}", end="", file=sys.stderr)
    print(file=sys.stderr)
    return jobs / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=5_000)
    parser.add_argument("--seconds", type=float, default=10.0, help="how long the worker runs")
    parser.add_argument("--concurrency", type=int, default=100)
    args = parser.parse_args()

    prefix = f"deep{os.getpid()}"
    url = f"{DB_URL}?prefix={prefix}"
    client = redis.Redis.from_url(DB_URL)
    workdir = Path(os.environ.get("TMPDIR", "/tmp")) / prefix
    workdir.mkdir(exist_ok=True)
    (workdir / "deep_app.py").write_text(APP_MODULE)
    try:
        rate = anyio.run(fill, url, args.jobs, args.batch)
        used = client.info("memory")["used_memory"] / 2**20
        print(f"enqueued {args.jobs:,} jobs at {rate:,.0f} jobs/s; Redis holds {used:,.0f} MiB")
        env = {**os.environ, "DEEP_QUEUE_URL": url, "PYTHONPATH": str(workdir)}
        command = [sys.executable, "-m", "asyncq", "run", "deep_app:app"]
        command += ["--concurrency", str(args.concurrency), "--log-level", "warning"]
        worker = subprocess.Popen(command, env=env, cwd=workdir)
        samples = []
        try:
            deadline = time.monotonic() + args.seconds
            while time.monotonic() < deadline and worker.poll() is None:
                time.sleep(0.2)  # a sampling interval, not a synchronisation
                samples.append(rss_mib(worker.pid))
        finally:
            worker.send_signal(signal.SIGTERM)
            worker.wait(timeout=30)
        stats = anyio.run(_stats, url)
        ran = args.jobs - stats.pending - stats.running
        print(
            f"worker ran {ran:,} jobs in {args.seconds:g} s with {stats.pending:,} still "
            f"queued; RSS first {samples[0]:.1f} MiB, peak {max(samples):.1f} MiB, "
            f"last {samples[-1]:.1f} MiB ({len(samples)} samples)"
        )
    finally:
        names = list(client.scan_iter(f"{prefix}:*", count=10_000))
        for start in range(0, len(names), 10_000):
            client.delete(*names[start : start + 10_000])
        for path in workdir.iterdir():
            path.unlink()
        workdir.rmdir()


async def _stats(url: str) -> asyncq.QueueStats:
    app = asyncq.App(url)
    async with app:
        return (await app.queue_stats(["default"]))["default"]


if __name__ == "__main__":
    main()
