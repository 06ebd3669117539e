"""What a Redis Cluster failover loses of the jobs whose enqueue returned, without and with
``wait_replicas=1``.

    python benchmarks/redis_failover.py [--trials 3] [--callers 50]

Each trial starts a cluster of its own (``scripts/redis_cluster.sh``: 3 masters + 3
replicas, cluster-node-timeout 2 s, no persistence: what a failover loses is what had not
reached the replica), lets ``--callers`` concurrent producers enqueue to one queue as fast
as they can, SIGKILLs the master of that queue's slot after ``--before`` seconds, restarts
it ``--restart-after`` seconds later (it rejoins as a replica, so the shard has a replica
again for ``WAIT``), and stops the producers ``--after`` seconds after the kill. A worker then
drains the queue, and every job whose enqueue returned is looked for among the jobs that
ran. Printed per trial: jobs confirmed, confirmed jobs lost, how long enqueues were refused
(``BrokerUnavailable``), and the producers' rate before the kill.

Redis replicates asynchronously: a master answers a write, then streams it to its replicas.
A replica promoted after the master died has what had reached it, so the jobs of the last
moments before the kill (the replication lag, well under a millisecond on loopback, more
across a network) are confirmed to their producers and gone. With ``wait_replicas=1`` an
enqueue returns only after a replica has its jobs.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import tempfile
import time
from pathlib import Path

import anyio
from redis.cluster import RedisCluster

import asyncq
from asyncq.errors import BrokerUnavailable

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = str(ROOT / "scripts" / "redis_cluster.sh")


def _base_port() -> int:
    for base in range(24100, 30000, 10):
        ports = (*range(base, base + 6), *range(base + 10000, base + 10006))
        if all(_free(port) for port in ports):
            return base
    raise RuntimeError("no free ports for a cluster")


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


async def _trial(args: argparse.Namespace, wait: bool) -> dict[str, float]:
    directory = Path(tempfile.mkdtemp(prefix="asyncq-failover-"))
    base = _base_port()
    script = ["bash", SCRIPT]
    await anyio.run_process([*script, "start", str(directory), str(base)])
    try:
        with RedisCluster(host="127.0.0.1", port=base) as client:
            master = client.get_node_from_key("{failover}").port
        url = f"redis://127.0.0.1:{base}/0?cluster=true&prefix=fo"
        if wait:
            url += "&wait_replicas=1"
        app = asyncq.App(url)
        ran: set[int] = set()

        @app.task(queue="failover")
        async def record(n: int) -> None:
            ran.add(n)

        confirmed: list[int] = []
        refused: list[float] = []
        counter = iter(range(10**9))
        stop = anyio.Event()
        async with app:

            async def produce() -> None:
                while not stop.is_set():
                    n = next(counter)
                    try:
                        await record.options(key=f"n{n}").enqueue(n)
                    except BrokerUnavailable:
                        refused.append(time.monotonic())
                        await anyio.sleep(0.1)  # a producer's backoff
                        continue
                    confirmed.append(n)

            async with anyio.create_task_group() as tg:
                for _ in range(args.callers):
                    tg.start_soon(produce)
                await anyio.sleep(args.before)
                before = len(confirmed) / args.before
                await anyio.run_process([*script, "kill", str(directory), str(master)])
                killed = time.monotonic()
                await anyio.sleep(args.restart_after)
                await anyio.run_process([*script, "restart", str(directory), str(master)])
                await anyio.sleep(args.after - args.restart_after)
                stop.set()
            async with app.worker(concurrency=100, queues=["failover"]):
                with anyio.fail_after(120):
                    while not ran.issuperset(confirmed):  # other tasks run them
                        await anyio.sleep(0.1)
                        stats = await app.backend.queue_stats(["failover"])
                        if not (stats[0].pending or stats[0].running or stats[0].scheduled):
                            break
        lost = len(set(confirmed) - ran)
        window = (max(refused) - killed) if refused else 0.0
        return {"confirmed": len(confirmed), "lost": lost, "refused": window, "rate": before}
    finally:
        await anyio.run_process([*script, "stop", str(directory)], check=False)
        shutil.rmtree(directory, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--callers", type=int, default=50)
    parser.add_argument("--before", type=float, default=3.0)
    parser.add_argument("--restart-after", type=float, default=6.0)
    parser.add_argument("--after", type=float, default=10.0)
    args = parser.parse_args()
    print(f"{args.callers} producers, the queue's master SIGKILLed {args.before:g} s in")
    print("| wait_replicas | trial | enqueues/s before | confirmed | lost | refused for (s) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for wait in (False, True):
        for trial in range(1, args.trials + 1):
            got = anyio.run(_trial, args, wait)
            print(
                f"| {'1' if wait else 'none'} | {trial} | {got['rate']:,.0f} | "
                f"{got['confirmed']:,} | {got['lost']:,} | {got['refused']:.1f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
