"""How late delayed jobs run on RabbitMQ, where a delay is a series of TTL waits.

Enqueues one job per delay (each several times), runs a worker in the same process, and
prints how long after its due time each job started, against the contract's tolerance
(10% of the delay or 100 ms, whichever is larger). A job must never start early.

    .venv/bin/python benchmarks/amqp_delays.py
    .venv/bin/python benchmarks/amqp_delays.py --delays 0.02,0.5,3 --repeat 5

Uses RabbitMQ at 127.0.0.1:5672 (guest/guest) and Redis db 12 for the job records, under a
prefix of its own.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import aio_pika
import anyio
from asyncq_amqp.topology import BUCKETS_MS, Names

import asyncq

AMQP = "amqp://guest:guest@127.0.0.1:5672/%2F"
RECORDS = "redis://127.0.0.1:6379/12"


async def measure(delays: list[float], repeat: int) -> None:
    prefix = f"bench-delays-{os.urandom(4).hex()}"
    app = asyncq.App(f"{AMQP}?records={RECORDS}&prefix={prefix}")
    started: dict[str, float] = {}

    @app.task
    async def stamp(tag: str) -> None:
        started[tag] = time.time()

    due: dict[str, tuple[float, float]] = {}
    async with app, app.worker(concurrency=50):
        jobs = []
        for delay in delays:
            for n in range(repeat):
                tag = f"{delay}-{n}"
                due[tag] = (delay, time.time() + delay)
                jobs.append(await stamp.options(delay=delay).enqueue(tag))
        for job in jobs:
            await job.result(timeout=max(delays) * 2 + 10)
    await drop(prefix)
    print(f"{'delay (s)':>10} {'late p50 (ms)':>14} {'late max (ms)':>14} {'tolerance (ms)':>15}")
    for delay in delays:
        late = [(started[tag] - at) * 1000 for tag, (d, at) in due.items() if d == delay]
        early = [x for x in late if x < 0]
        verdict = f"  EARLY by {-min(early):.1f} ms" if early else ""
        tolerance = max(0.1 * delay, 0.1) * 1000
        print(
            f"{delay:>10.3f} {statistics.median(late):>14.1f} {max(late):>14.1f}"
            f" {tolerance:>15.0f}{verdict}"
        )


async def drop(prefix: str) -> None:
    """Delete the queues and exchanges this run declared."""
    names = Names(prefix)
    connection = await aio_pika.connect(AMQP)
    async with connection:
        channel = await connection.channel()
        for name in (names.work("default"), names.dead("default"), names.delayed("default")):
            await channel.queue_delete(name)
        for ms in BUCKETS_MS:
            await channel.queue_delete(names.wait(ms))
            await channel.exchange_delete(names.wait(ms))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delays", default="0.01,0.05,0.3,0.6,1,2.5,5,7.3")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    delays = [float(d) for d in args.delays.split(",")]
    anyio.run(measure, delays, args.repeat)


if __name__ == "__main__":
    main()
