"""asyncq in one process: a worker and a producer sharing the in-memory broker.

    python examples/quickstart.py

It registers a few tasks, starts a worker inside this process, enqueues jobs (one at a
time, in bulk, delayed, one that fails once and is retried, one that is rejected), prints
each result as it arrives, then the queue stats. It takes about a second.

``memory://`` lives inside one process. To run producers and workers as separate
processes, point the App at a shared broker instead (e.g. ``$ASYNCQ_BROKER``).
"""

from __future__ import annotations

import logging
import time

import anyio

import asyncq

app = asyncq.App(
    "memory://quickstart",
    # Short, deterministic backoff so the retry below happens within the demo's second.
    backoff=asyncq.Backoff(base=0.1, jitter=False),
)


@app.task
async def add(a: int, b: int) -> int:
    return a + b


@app.task(retries=3)
async def flaky_fetch(url: str) -> str:
    """Fails on its first attempt, as a downstream service sometimes does."""
    job = asyncq.current_job()
    if job.attempt == 1:
        raise ConnectionError(f"{url} did not answer")  # retried after the backoff
    return f"fetched {url} on attempt {job.attempt}"


@app.task
async def remind(text: str) -> str:
    return f"reminder: {text}"


@app.task
async def charge(amount_cents: int) -> int:
    if amount_cents <= 0:
        # Bad input will not get better with a retry: dead-letter it at once.
        raise asyncq.Reject(f"cannot charge {amount_cents} cents")
    return amount_cents


def since(start: float) -> str:
    return f"{(time.perf_counter() - start) * 1000:7.1f} ms"


async def main() -> None:
    async with app, app.worker(concurrency=20):
        print(f"worker started on {app.broker_url} for queues {', '.join(app.queues)}")

        start = time.perf_counter()
        job = await add.enqueue(2, 3)
        print(f"add(2, 3) = {await job.result(timeout=5)}  [{since(start)}]")

        start = time.perf_counter()
        jobs = await add.enqueue_many([(i, i) for i in range(10)])
        results = [await j.result(timeout=5) for j in jobs]
        print(f"enqueue_many: 10 adds -> {results}  [{since(start)}]")

        start = time.perf_counter()
        flaky = await flaky_fetch.enqueue("https://example.com/")
        print(f"flaky_fetch: {await flaky.result(timeout=5)}  [{since(start)}]")

        start = time.perf_counter()
        later = await remind.options(delay=0.3).enqueue("stand up")
        print(f"remind (delay=0.3 s) is {await later.status()}")
        print(f"remind: {await later.result(timeout=5)}  [{since(start)}]")

        start = time.perf_counter()
        bad = await charge.enqueue(-5)
        try:
            await bad.result(timeout=5)
        except asyncq.JobFailed as exc:
            print(f"charge(-5) failed: {exc.error}  [{since(start)}]")

    # The worker has shut down; the App is still open for the producer side.
    async with app:
        for name, stats in (await app.queue_stats()).items():
            print(
                f"queue {name}: pending={stats.pending} scheduled={stats.scheduled} "
                f"running={stats.running} dead={stats.dead}"
            )
        for dead in await app.dead_letters():
            print(f"dead letter {dead.id} ({dead.task}): {dead.error}")
    print("done")


if __name__ == "__main__":
    # The worker reports retries, rejections and its start and stop through logging.
    logging.basicConfig(level=logging.INFO, format="  (log) %(name)s: %(message)s")
    anyio.run(main)
