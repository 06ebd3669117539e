"""Do a ``postgresql://`` broker's tables stop growing under a steady load once finished
rows expire?

    python3 benchmarks/postgres_bloat.py                         # 10 min at 2,000 jobs/s
    python3 benchmarks/postgres_bloat.py --duration 120 --rate 500 --every 10

By default it starts a PostgreSQL of its own with initdb's defaults (autovacuum on) on a
free loopback port, and removes it after; ``--dsn`` measures an existing server instead
(the header line says whether its autovacuum is on). One process runs a worker
(concurrency 100) and a producer that enqueues no-op jobs at a fixed rate, in batches of
``--rate / 10`` every 0.1 s, in the schema ``bench_bloat`` (dropped first and at the end),
with ``result_ttl=--result-ttl``. Every ``--every`` seconds it prints the jobs done, the
rows of the jobs table (all, and finished), its dead tuples, the sizes of its heap and of
its indexes, and how often autovacuum has run on it. The worker's upkeep deletes expired
rows every second in batches of 2,000, each its own short transaction, so autovacuum finds
dead tuples spread over many small transactions: the heap and the indexes should level off
about ``--result-ttl`` seconds in.
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
import asyncpg

import asyncq

SCHEMA = "bench_bloat"


@contextmanager
def private_server() -> Iterator[str]:
    """A fresh server (initdb, trust, its defaults otherwise) on a free loopback port; its
    URL. As the ``postgres`` user when run as root, since initdb refuses root."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]))
    if not found:
        raise SystemExit("no PostgreSQL server binaries: bash scripts/services.sh installs them")
    bin_dir = Path(found[-1])
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    directory = Path(tempfile.mkdtemp(prefix="asyncq-bloat-"))
    as_root = os.geteuid() == 0
    if as_root:
        shutil.chown(directory, "postgres", "postgres")

    def tool(name: str, *args: str) -> None:
        command = [str(bin_dir / name), *args]
        if as_root:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    data = directory / "data"
    tool("initdb", "-D", str(data), "-A", "trust", "-U", "postgres")
    options = f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={directory}"
    tool("pg_ctl", "-D", str(data), "-l", str(directory / "log"), "-o", options, "-w", "start")
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        tool("pg_ctl", "-D", str(data), "-m", "fast", "-w", "stop")
        shutil.rmtree(directory, ignore_errors=True)


async def sample(conn: asyncpg.Connection) -> tuple[int, int, int, float, float, int]:
    """Rows, finished rows, dead tuples, heap MiB, index MiB, autovacuum runs."""
    rows, finished = await conn.fetchrow(
        f"SELECT count(*), count(*) FILTER (WHERE state = 3) FROM {SCHEMA}.jobs"
    )
    stats = await conn.fetchrow(
        "SELECT n_dead_tup, autovacuum_count, pg_relation_size(relid) AS heap, "
        "pg_indexes_size(relid) AS indexes FROM pg_stat_user_tables "
        "WHERE schemaname = $1 AND relname = 'jobs'",
        SCHEMA,
    )
    mib = 2**20
    return (
        rows,
        finished,
        stats["n_dead_tup"],
        stats["heap"] / mib,
        stats["indexes"] / mib,
        stats["autovacuum_count"],
    )


async def run(args: argparse.Namespace, dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    await conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
    app = asyncq.App(f"{dsn}?schema={SCHEMA}&result_ttl={args.result_ttl}")
    ran = 0

    @app.task(name="noop")
    async def noop() -> None:
        nonlocal ran
        ran += 1

    sent = 0
    batch = max(1, round(args.rate / 10))

    async def produce(until: float) -> None:
        nonlocal sent
        begin = time.monotonic()
        while time.monotonic() < until:
            await noop.enqueue_many([()] * batch)
            sent += batch
            # Paced against the schedule, so the rate does not drift.
            await anyio.sleep(max(0.0, begin + sent / args.rate - time.monotonic()))

    print(
        f"{args.rate:,.0f} jobs/s for {args.duration:.0f} s, result_ttl={args.result_ttl:g}, "
        f"then {args.result_ttl:g} s more; PostgreSQL: "
        f"{await conn.fetchval('SHOW server_version')}, autovacuum "
        f"{await conn.fetchval('SHOW autovacuum')}"
    )
    print(
        f"{'t (s)':>6} {'sent':>9} {'done':>9} {'rows':>8} {'finished':>8} {'dead':>8} "
        f"{'heap MiB':>9} {'index MiB':>9} {'autovac':>7}"
    )
    try:
        async with app, app.worker(concurrency=100):
            start = time.monotonic()
            end = start + args.duration
            async with anyio.create_task_group() as tg:
                tg.start_soon(produce, end)
                while time.monotonic() < end + args.result_ttl + args.every:
                    await anyio.sleep(args.every)
                    rows, finished, dead, heap, indexes, vacuums = await sample(conn)
                    print(
                        f"{time.monotonic() - start:6.0f} {sent:9,} {ran:9,} {rows:8,} "
                        f"{finished:8,} {dead:8,} {heap:9.1f} {indexes:9.1f} {vacuums:7}",
                        flush=True,
                    )
    finally:
        await conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--dsn", help="an existing server's database (default: a fresh server of its own)"
    )
    parser.add_argument("--rate", type=float, default=2_000.0, help="jobs per second")
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of load")
    parser.add_argument("--result-ttl", type=float, default=60.0)
    parser.add_argument("--every", type=float, default=30.0, help="seconds between samples")
    args = parser.parse_args()
    if min(args.rate, args.duration, args.result_ttl, args.every) <= 0:
        parser.error("--rate, --duration, --result-ttl and --every must be > 0")
    if args.dsn is not None:
        anyio.run(run, args, args.dsn)
        return
    with private_server() as dsn:
        anyio.run(run, args, dsn)


if __name__ == "__main__":
    main()
