"""Producers and workers in separate processes on one SQLite file, some workers SIGKILLed:
does every job run, and none twice but those a killed worker held?

    python3 benchmarks/sqlite_processes.py --producers 4 --workers 3 --seconds 60
    python3 benchmarks/sqlite_processes.py --seconds 5 --kill-every 2 --json

Each producer process enqueues for ``--seconds`` (single enqueues and batches of 10, at up to
``--rate`` jobs a second each) and writes the id of every job whose enqueue returned (a
confirmed job) to its ledger. Each worker process runs the jobs (a handler of 0 to 4 ms) and
writes each run's job id to its ledger. Every ``--kill-every`` seconds one worker, in turn, is
SIGKILLed mid-flight and a new one started in its place. Once the producers are done and the
queue is empty the workers are stopped with SIGTERM, and the ledgers are read:

* lost: confirmed jobs that never ran (must be 0);
* duplicated: runs beyond a job's first; allowed only for jobs a killed worker held
  (at most its concurrency per kill);
* "database is locked" (or any traceback) in any process's output (must be none).

Exit status 0 when all three hold; the working directory (file, ledgers, logs) is removed
then, unless ``--keep``. Only the standard library and asyncq are needed.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import IO, Any

CONCURRENCY = 20


# -- the child processes ------------------------------------------------------------------------
def _app(url: str, ledger: IO[str]) -> Any:
    import anyio

    import asyncq

    app = asyncq.App(url)

    @app.task(name="soak.job")
    async def job(n: int) -> None:
        await anyio.sleep(random.uniform(0, 0.004))
        # Written before the job is settled: a job run by a worker killed before its settle
        # is in the ledger and runs again elsewhere (a duplicate, allowed).
        ledger.write(f"{asyncq.current_job().id}\n")
        ledger.flush()

    return app, job


def worker(url: str, ledger_path: str) -> None:
    import anyio

    with open(ledger_path, "a") as ledger:
        app, _ = _app(url, ledger)

        async def main() -> None:
            await app.run_worker(concurrency=CONCURRENCY, handle_signals=True)

        anyio.run(main)


def producer(url: str, ledger_path: str, seconds: float, rate: float) -> None:
    import anyio

    with open(ledger_path, "a") as ledger:
        app, job = _app(url, ledger)

        async def main() -> None:
            deadline = time.monotonic() + seconds
            n = 0
            async with app:
                while time.monotonic() < deadline:
                    started = time.monotonic()
                    if n % 2:
                        ids = [(await job.enqueue(n)).id]
                    else:
                        ids = [j.id for j in await job.enqueue_many([(n,)] * 10)]
                    n += 1
                    ledger.write("".join(f"{i}\n" for i in ids))
                    ledger.flush()
                    await anyio.sleep(max(len(ids) / rate - (time.monotonic() - started), 0))

        anyio.run(main)


# -- the parent ---------------------------------------------------------------------------------
def _spawn(args: list[str], out: Path) -> subprocess.Popen[bytes]:
    with out.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, __file__, *args], stdout=log, stderr=subprocess.STDOUT
        )


def _queue_empty(url: str) -> bool:
    import anyio

    import asyncq

    async def look() -> bool:
        async with asyncq.App(url) as app:
            (stats,) = (await app.queue_stats(["default"])).values()
            return stats.pending + stats.scheduled + stats.running == 0

    return anyio.run(look)


def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="asyncq-sqlite-processes-"))
    url = f"sqlite:///{work / 'jobs.db'}?visibility_timeout={args.visibility_timeout}"
    rng = random.Random(args.seed)
    workers: list[subprocess.Popen[bytes]] = []
    started = 0

    def start_worker() -> None:
        nonlocal started
        started += 1
        workers.append(
            _spawn(
                ["--role", "worker", "--url", url, "--ledger", str(work / f"ran-{started}")],
                work / f"worker-{started}.log",
            )
        )

    for _ in range(args.workers):
        start_worker()
    producers = [
        _spawn(
            [
                "--role",
                "producer",
                "--url",
                url,
                "--ledger",
                str(work / f"enqueued-{i}"),
                "--seconds",
                str(args.seconds),
                "--rate",
                str(args.rate),
            ],
            work / f"producer-{i}.log",
        )
        for i in range(args.producers)
    ]
    kills = 0
    begin = time.monotonic()
    next_kill = begin + args.kill_every if args.kill_every else float("inf")
    while any(p.poll() is None for p in producers):
        time.sleep(0.05)
        if time.monotonic() >= next_kill:
            victim = workers.pop(rng.randrange(len(workers)))
            victim.send_signal(signal.SIGKILL)
            victim.wait()
            kills += 1
            start_worker()
            next_kill += args.kill_every
    producing = time.monotonic() - begin
    deadline = time.monotonic() + args.visibility_timeout + 30
    while not _queue_empty(url):
        if time.monotonic() > deadline:
            break
        time.sleep(0.2)
    drained = time.monotonic() - begin
    for w in workers:
        w.send_signal(signal.SIGTERM)
    for w in workers:
        w.wait(timeout=30)
    confirmed: set[str] = set()
    for path in work.glob("enqueued-*"):
        confirmed.update(path.read_text().split())
    runs: Counter[str] = Counter()
    for path in work.glob("ran-*"):
        runs.update(path.read_text().split())
    outputs = "".join(path.read_text(errors="replace") for path in work.glob("*.log"))
    lost = sorted(confirmed - set(runs))
    duplicated = sum(n - 1 for n in runs.values() if n > 1)
    report = {
        "producers": args.producers,
        "workers": args.workers,
        "seconds": round(producing, 1),
        "drained_after": round(drained, 1),
        "confirmed": len(confirmed),
        "completed": len(set(runs) & confirmed),
        "jobs_per_second": round(len(set(runs) & confirmed) / drained),
        "lost": len(lost),
        "duplicated": duplicated,
        "workers_killed": kills,
        "duplicates_allowed": kills * CONCURRENCY,
        "database_is_locked": outputs.count("database is locked"),
        "tracebacks": outputs.count("Traceback"),
        "producer_exit_codes": [p.returncode for p in producers],
        "directory": str(work),
    }
    report["ok"] = (
        not lost
        and duplicated <= report["duplicates_allowed"]
        and not report["database_is_locked"]
        and not report["tracebacks"]
        and all(code == 0 for code in report["producer_exit_codes"])
    )
    if report["ok"] and not args.keep:
        shutil.rmtree(work)
        report["directory"] = None
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--role", choices=("parent", "worker", "producer"), default="parent")
    parser.add_argument("--url")
    parser.add_argument("--ledger")
    parser.add_argument("--producers", type=int, default=4)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--rate", type=float, default=500.0, help="jobs/s per producer")
    parser.add_argument("--kill-every", type=float, default=10.0, help="0: no kills")
    parser.add_argument("--visibility-timeout", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the file and ledgers")
    args = parser.parse_args()
    if args.role == "worker":
        worker(args.url, args.ledger)
        return
    if args.role == "producer":
        producer(args.url, args.ledger, args.seconds, args.rate)
        return
    report = run(args)
    if args.json:
        print(json.dumps(report))
    else:
        for key, value in report.items():
            print(f"{key:>20}: {value}")
    sys.exit(0 if report["ok"] else 1)


if __name__ == "__main__":
    main()
