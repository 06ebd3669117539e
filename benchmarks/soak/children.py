"""The soak's worker and producer processes, on asyncq's public API only:

    python -m soak.children worker URL LEDGER --concurrency 20 --handler-ms 20,200
    python -m soak.children producer URL LEDGER --index 0 --rate 100 --seconds 60

A worker is ``app.run_worker`` (SIGTERM: a graceful shutdown). Its one task records a run in
the ledger before anything else, so a run cut short by a SIGKILL is still counted, and
records its return after the work, before asyncq acknowledges the job.

A producer enqueues ledger ids ``P-N`` (the job's argument) at ``--rate`` for ``--seconds``,
``--enqueuers`` at a time, and records each one whose enqueue returned. An enqueue that
raised (the broker down, the network cut, or no answer within ``--enqueue-timeout``) is tried
again with the same ledger id, with backoff, until it returns, or until ``--give-up`` seconds
after the producing time when the id is recorded as given up (never confirmed). With
``--keys`` (the default) every enqueue carries the ledger id as its idempotency key, so an
enqueue that did reach the broker before it raised is not stored twice by the retry.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import os
import random
from functools import partial
from pathlib import Path

import anyio

import asyncq

from .ledger import LedgerWriter

__all__ = ["TASK", "make_app"]

TASK = "chaos.job"


def make_app(
    url: str, ledger: LedgerWriter, handler_seconds: tuple[float, float] = (0.0, 0.0)
) -> tuple[asyncq.App, asyncq.Task[[str], None]]:
    """The soak's App on ``url`` and its one task, recording its runs in ``ledger``."""
    app = asyncq.App(url, shutdown_timeout=5.0)
    pid = os.getpid()

    @app.task(name=TASK)
    async def job(lid: str) -> None:
        current = asyncq.current_job()
        ledger.write("S", lid, current.id, pid, current.attempt, int(current.redelivered))
        await anyio.sleep(random.uniform(*handler_seconds))
        ledger.write("F", lid, current.id, pid)

    return app, job


def worker(args: argparse.Namespace) -> None:
    low, high = (float(ms) / 1000 for ms in args.handler_ms.split(","))
    ledger = LedgerWriter(Path(args.ledger))
    app, _ = make_app(args.url, ledger, (low, high))
    run = partial(
        app.run_worker,
        concurrency=args.concurrency,
        handle_signals=True,
        # A replacement may start while the broker is still coming back.
        wait_for_broker=60.0,
    )
    anyio.run(run)


def producer(args: argparse.Namespace) -> None:
    ledger = LedgerWriter(Path(args.ledger))
    app, job = make_app(args.url, ledger)
    numbers = itertools.count()
    seen: set[str] = set()

    async def confirm(lid: str, give_up_at: float) -> None:
        backoff = 0.1
        while True:
            try:
                with anyio.fail_after(args.enqueue_timeout):
                    if args.keys:
                        enqueued = await job.options(key=lid).enqueue(lid)
                    else:
                        enqueued = await job.enqueue(lid)
            except Exception as exc:  # whatever it is, it is counted by type in the report
                ledger.write("E", lid, type(exc).__name__)
                # The ledger keeps only the type; the message once, for a post-mortem.
                said = f"{type(exc).__name__}: {exc}"
                if said not in seen:
                    seen.add(said)
                    logging.warning("enqueue of %s raised %s", lid, said)
                if anyio.current_time() >= give_up_at:
                    ledger.write("U", lid)
                    return
                await anyio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            ledger.write("C", lid, enqueued.id)
            return

    async def enqueuer(end: float, give_up_at: float) -> None:
        interval = args.enqueuers / args.rate
        next_at = anyio.current_time()
        while anyio.current_time() < end:
            await confirm(f"{args.index}-{next(numbers)}", give_up_at)
            # After an outage, carry on at the rate instead of making up for lost time.
            next_at = max(next_at + interval, anyio.current_time() - interval)
            await anyio.sleep_until(next_at)

    async def main() -> None:
        async with app, anyio.create_task_group() as tg:
            end = anyio.current_time() + args.seconds
            for _ in range(args.enqueuers):
                tg.start_soon(enqueuer, end, end + args.give_up)

    anyio.run(main)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("role", choices=("worker", "producer"))
    parser.add_argument("url")
    parser.add_argument("ledger")
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--handler-ms", default="20,200", help="a run's time: uniform in LOW,HIGH")
    parser.add_argument("--index", type=int, default=0)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--enqueuers", type=int, default=4)
    parser.add_argument("--give-up", type=float, default=60.0)
    parser.add_argument("--enqueue-timeout", type=float, default=10.0)
    parser.add_argument("--keys", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args()
    # Warnings (a fetch that failed during an outage) go to the process's log file.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    worker(args) if args.role == "worker" else producer(args)


if __name__ == "__main__":
    main()
