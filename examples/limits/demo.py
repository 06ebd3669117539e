"""Rate and concurrency limits across two worker processes of concurrency 20 each.

    python -m examples.limits.demo rate          # rate_limit="10/s", then 50 unlimited jobs
    python -m examples.limits.demo tenant        # RateLimit(5, per=1, key="tenant"), 3 tenants
    python -m examples.limits.demo concurrency   # concurrency_limit=3, one worker SIGKILLed
    python -m examples.limits.demo account       # ConcurrencyLimit(1, key="account")

The broker is ``$ASYNCQ_BROKER`` (e.g. ``redis://127.0.0.1:6379/12?prefix=limits`` or
``amqp://guest:guest@127.0.0.1:5672/?records=redis://127.0.0.1:6379/12&prefix=limits``);
what ran when is read back from the handlers' ledger in Redis (see app.py). The killed
worker's permits come back when their lease runs out: the broker's ``visibility_timeout``
(add ``&visibility_timeout=5`` to a Redis URL to see it sooner), 30 s on RabbitMQ. The demo
starts its own workers (``asyncq run examples.limits.app:app``), and stops them at the end.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict

import anyio
import redis.asyncio as redis

from . import app as tasks

WORKERS, CONCURRENCY = 2, 20


def start_workers(env: dict[str, str]) -> list[subprocess.Popen[bytes]]:
    command = [
        sys.executable, "-m", "asyncq", "run", "examples.limits.app:app",
        "--concurrency", str(CONCURRENCY), "--queues", tasks.QUEUE, "--log-level", "warning",
    ]  # fmt: skip
    return [subprocess.Popen(command, env=env) for _ in range(WORKERS)]


async def wait_for(r: redis.Redis, key: str, count: int, timeout: float) -> None:
    with anyio.fail_after(timeout):
        while await r.llen(key) < count:  # noqa: ASYNC110 - the demo's ledger, not a queue
            await anyio.sleep(0.05)


async def read(r: redis.Redis, key: str) -> list[tuple[float, str, str, int, str]]:
    rows = []
    for raw in await r.lrange(key, 0, -1):
        at, task, k, pid, job = text(raw).split()
        rows.append((float(at), task, k, int(pid), job))
    return rows


def text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


def most_in_a_window(times: list[float], per: float) -> int:
    times = sorted(times)
    return max((sum(1 for t in times[i:] if t < s + per) for i, s in enumerate(times)), default=0)


def histogram(times: list[float], origin: float) -> str:
    per_second = Counter(int(t - origin) for t in times)
    return " ".join(f"{s}s:{per_second[s]}" for s in range(max(per_second) + 1))


async def rate(r: redis.Redis) -> None:
    t0 = time.time()
    await tasks.call_partner_api.enqueue_many([(n,) for n in range(100)])
    enqueued_unlimited = time.time()
    await tasks.unlimited.enqueue_many([(n,) for n in range(50)])
    await wait_for(r, f"{tasks.LEDGER}:starts", 150, 60)
    rows = await read(r, f"{tasks.LEDGER}:starts")
    limited = [at for at, task, *_ in rows if task == "rate"]
    free = [at for at, task, *_ in rows if task == "unlimited"]
    pids = {pid for *_, pid, _ in rows}
    print(
        f"rate_limit='10/s': 100 jobs started over {max(limited) - t0:.2f} s "
        f"(first {min(limited) - t0:.2f} s after enqueue), by {len(pids)} worker processes"
    )
    print(f"  starts per second since the enqueue: {histogram(limited, t0)}")
    print(f"  most starts in any 1-s window (sliding): {most_in_a_window(limited, 1.0)}")
    ordered = sorted(limited)
    closest = min(b - a for a, b in zip(ordered, ordered[10:], strict=False))
    print(f"  closest 11 consecutive starts span {closest:.4f} s (must be >= 1)")
    print(
        f"  50 unlimited jobs enqueued after them: all started within "
        f"{max(free) - enqueued_unlimited:.3f} s"
    )


async def tenant(r: redis.Redis) -> None:
    t0 = time.time()
    calls = [(t, n) for n in range(20) for t in ("acme", "globex", "initech")]
    await tasks.sync_tenant.enqueue_many(calls)
    await wait_for(r, f"{tasks.LEDGER}:starts", 60, 60)
    by_tenant: dict[str, list[float]] = defaultdict(list)
    for at, _, key, *_ in await read(r, f"{tasks.LEDGER}:starts"):
        by_tenant[key].append(at)
    print("RateLimit(5, per=1, key='tenant'): 3 tenants x 20 jobs")
    for name, times in sorted(by_tenant.items()):
        print(
            f"  {name:8} most in any 1-s window {most_in_a_window(times, 1.0)}, "
            f"from {min(times) - t0:.2f} s to {max(times) - t0:.2f} s: {histogram(times, t0)}"
        )


async def concurrency(r: redis.Redis, workers: list[subprocess.Popen[bytes]], count: int) -> None:
    await tasks.render_report.enqueue_many([(n,) for n in range(count)])
    samples = f"{tasks.LEDGER}:samples:concurrency"
    await wait_for(r, f"{tasks.LEDGER}:starts", 3, 30)
    # Kill the worker holding the most of the running jobs (not started jobs: permits).
    await anyio.sleep(0.3)
    starts = await read(r, f"{tasks.LEDGER}:starts")
    ends = {job for *_, job in await read(r, f"{tasks.LEDGER}:ends")}
    holding = Counter(pid for *_, pid, job in starts if job not in ends)
    victim_pid, held = holding.most_common(1)[0]
    victim = next(w for w in workers if w.pid == victim_pid)
    killed_at = time.time()
    victim.send_signal(signal.SIGKILL)
    print(f"concurrency_limit=3: SIGKILLed worker {victim_pid} holding {held} running job(s)")
    # The killed jobs' counter entries never end: leave them out from here on.
    await r.decrby(f"{tasks.LEDGER}:running:concurrency", held)
    survivor = next(w.pid for w in workers if w.pid != victim_pid)
    with anyio.fail_after(300):
        while True:
            rows = await read(r, f"{tasks.LEDGER}:starts")
            ended = {job for *_, job in await read(r, f"{tasks.LEDGER}:ends")}
            live = [row for row in rows if row[3] == survivor and row[4] not in ended]
            if len(live) >= 3:
                break
            await anyio.sleep(0.05)
    back = time.time() - killed_at
    print(f"  the other worker was running 3 again {back:.2f} s after the kill")
    await wait_for(r, f"{tasks.LEDGER}:ends", count, 300)
    most = max(int(s.split()[1]) for s in (text(x) for x in await r.lrange(samples, 0, -1)))
    starts = await read(r, f"{tasks.LEDGER}:starts")
    print(
        f"  most running at once, sampled by every start: {most}; "
        f"{len({job for *_, job in starts})} jobs all finished; "
        f"{len(starts) - len({job for *_, job in starts})} ran twice (the killed ones)"
    )


async def account(r: redis.Redis) -> None:
    calls = [(a, n) for n in range(20) for a in ("alice", "bob", "carol")]
    t0 = time.time()
    jobs = await tasks.post_ledger.enqueue_many(calls)
    order = {job.id: n for job, (_, n) in zip(jobs, calls, strict=True)}
    await wait_for(r, f"{tasks.LEDGER}:ends", 60, 120)
    by_account: dict[str, list[int]] = defaultdict(list)
    spans: list[tuple[float, float, str]] = []
    ends = {job: at for at, *_, job in await read(r, f"{tasks.LEDGER}:ends")}
    for at, _, key, _, job in sorted(await read(r, f"{tasks.LEDGER}:starts")):
        by_account[key].append(order[job])
        spans.append((at, ends[job], key))
    took = max(end for _, end, _ in spans) - t0
    print(f"ConcurrencyLimit(1, key='account'): 3 accounts x 20 jobs of 50 ms, {took:.2f} s")
    for name, seq in sorted(by_account.items()):
        print(f"  {name:6} start order {'= enqueue order' if seq == sorted(seq) else seq}")
    overlap_keys = (
        sum(1 for a in spans for b in spans if a[2] != b[2] and a[0] < b[1] and b[0] < a[1]) // 2
    )
    same_key = (
        sum(
            1
            for a in spans
            for b in spans
            if a is not b and a[2] == b[2] and a[0] < b[1] and b[0] < a[1]
        )
        // 2
    )
    print(
        f"  pairs of jobs of different accounts running at once: {overlap_keys}; "
        f"of one account: {same_key}"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("scenario", choices=["rate", "tenant", "concurrency", "account"])
    parser.add_argument(
        "--jobs", type=int, default=100, help="concurrency: how many jobs of 0.5 s (default 100)"
    )
    arguments = parser.parse_args()
    scenario = arguments.scenario
    r = redis.Redis.from_url(os.environ.get("LEDGER_URL", "redis://127.0.0.1:6379/12"))
    for key in await r.keys(f"{tasks.LEDGER}:*"):
        await r.delete(key)
    workers = start_workers(dict(os.environ))
    try:
        async with tasks.app:
            await tasks.app.purge_queue(tasks.QUEUE)
            with anyio.fail_after(30):  # both workers up: they beat once they serve
                while len(await tasks.app.backend.store.workers()) < WORKERS:  # noqa: ASYNC110
                    await anyio.sleep(0.1)
            if scenario == "rate":
                await rate(r)
            elif scenario == "tenant":
                await tenant(r)
            elif scenario == "concurrency":
                await concurrency(r, workers, arguments.jobs)
            else:
                await account(r)
    finally:
        for w in workers:
            if w.poll() is None:
                w.send_signal(signal.SIGTERM)
        for w in workers:
            w.wait(30)


if __name__ == "__main__":
    anyio.run(main)
