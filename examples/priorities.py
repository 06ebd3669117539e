"""Priorities: 100 jobs of priority 0, then 10 of priority 9, enqueued while no worker runs;
a worker that takes one job at a time starts the 10 first, then the 100, each group in the
order it was enqueued.

    python examples/priorities.py
    ASYNCQ_BROKER='redis://127.0.0.1:6379/0?prefix=demo' python examples/priorities.py
    ASYNCQ_BROKER='amqp://guest:guest@127.0.0.1:5672/?prefix=demo' python examples/priorities.py

The broker is ``$ASYNCQ_BROKER`` (``memory://`` without it). The demo's queue is removed at
the end, so it leaves nothing queued behind.
"""

from __future__ import annotations

import anyio

import asyncq

QUEUE = "priorities-demo"

app = asyncq.App()
ran: list[str] = []
all_ran = anyio.Event()


@app.task(queue=QUEUE)  # priority 0, the default
async def resize(n: int) -> None:
    ran.append(f"resize-{n}")
    if len(ran) == 110:
        all_ran.set()


@app.task(queue=QUEUE, priority=9)  # 0..9, higher runs first
async def page_on_call(n: int) -> None:
    ran.append(f"page-{n}")
    if len(ran) == 110:
        all_ran.set()


async def main() -> None:
    async with app:
        await resize.enqueue_many([(i,) for i in range(100)])
        await page_on_call.enqueue_many([(i,) for i in range(10)])
        # A job can also take another priority for itself: .options(priority=...).
        print(f"enqueued 100 of priority 0, then 10 of priority 9 on {app.broker_url}")
        # Jobs a worker holds are not preempted: with prefetch=0 it holds only the one it
        # runs, so the order below is exact.
        async with app.worker(queues=[QUEUE], concurrency=1, prefetch=0):
            with anyio.fail_after(60):
                await all_ran.wait()
        await app.remove_queue(QUEUE)
    print(f"first 10 to run: {', '.join(ran[:10])}")
    print(f"then: {ran[10]}, {ran[11]}, ..., {ran[-1]}")
    expected = [f"page-{i}" for i in range(10)] + [f"resize-{i}" for i in range(100)]
    print(f"priority 9 first, FIFO within each priority: {ran == expected}")


if __name__ == "__main__":
    anyio.run(main)
