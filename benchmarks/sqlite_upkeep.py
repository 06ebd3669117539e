"""Does a ``sqlite://`` file stop growing under a steady load once finished records expire?

    python3 benchmarks/sqlite_upkeep.py                       # 1,000,000 jobs, result_ttl=60
    python3 benchmarks/sqlite_upkeep.py --jobs 200000 --result-ttl 10 --every 2

One process runs a worker (concurrency 100) and a producer that enqueues no-op jobs in
batches of 1,000 as fast as the worker takes them (it keeps at most ``--backlog`` pending, so
the file holds finished records, not a queue that only grows). Every ``--every`` seconds it
prints the jobs done, the rows in the file's job table, and the sizes of the database file
and its WAL. After the last job it goes on until every record has expired. The worker's
upkeep deletes expired rows every second and SQLite reuses their pages, so the database
stops growing about ``--result-ttl`` seconds in; the WAL stays near the checkpoint
threshold (1,000 pages).
"""

from __future__ import annotations

import argparse
import sqlite3
import tempfile
import time
from pathlib import Path

import anyio

import asyncq


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--result-ttl", type=float, default=60.0)
    parser.add_argument("--every", type=float, default=5.0)
    parser.add_argument("--backlog", type=int, default=20_000)
    args = parser.parse_args()
    path = Path(tempfile.mkdtemp(prefix="asyncq-upkeep-")) / "jobs.db"
    app = asyncq.App(f"sqlite:///{path}?result_ttl={args.result_ttl}")
    ran = 0

    @app.task(name="noop")
    async def noop() -> None:
        nonlocal ran
        ran += 1

    def rows() -> int:
        conn = sqlite3.connect(path)
        try:
            return int(conn.execute("SELECT count(*) FROM jobs").fetchone()[0])
        finally:
            conn.close()

    def size(p: Path) -> str:
        return f"{p.stat().st_size / 2**20:8.1f} MiB" if p.exists() else "       - MiB"

    async def produce() -> None:
        sent = 0
        while sent < args.jobs:
            if sent - ran > args.backlog:
                await anyio.sleep(0.01)  # the worker is behind: wait for it, not the queue
                continue
            n = min(1000, args.jobs - sent)
            await noop.enqueue_many([()] * n)
            sent += n

    async def run() -> None:
        start = time.monotonic()
        print(f"{path}: {args.jobs:,} jobs, result_ttl={args.result_ttl:g} s")
        print(f"{'t (s)':>6} {'jobs done':>11} {'rows':>9} {'database':>12} {'WAL':>12}")
        async with app, app.worker(concurrency=100), anyio.create_task_group() as tg:
            tg.start_soon(produce)
            while True:
                await anyio.sleep(args.every)
                left = await anyio.to_thread.run_sync(rows)
                wal = Path(f"{path}-wal")
                print(
                    f"{time.monotonic() - start:6.0f} {ran:11,} {left:9,} {size(path)} {size(wal)}",
                    flush=True,
                )
                if ran >= args.jobs and left == 0:
                    break

    anyio.run(run)


if __name__ == "__main__":
    main()
