"""Jobs in every state for the dashboard to show: run this, then open the dashboard.

    python -m examples.dashboard_demo                 # fills the broker, keeps a job running
    asyncq web examples.dashboard_demo:app            # in another terminal: the dashboard

The broker is ``$ASYNCQ_BROKER`` (default: the embedded ``sqlite:///dashboard-demo.db``;
``redis://127.0.0.1:6379/0`` shows it on Redis). It leaves queued, scheduled, retrying,
succeeded, dead and cancelled jobs, one of them with an argument that is HTML, then keeps a
worker running one long job (and the periodic ``digest`` schedule) until Ctrl-C, so the
workers page and the running tab have something to show too. ``--once`` stops after the
filling, for tests and scripts.
"""

from __future__ import annotations

import logging
import os
import sys

import anyio

import asyncq

app = asyncq.App(os.environ.get("ASYNCQ_BROKER", "sqlite:///dashboard-demo.db"))


@app.task(name="charge", retries=0)
async def charge(order: str, amount: int) -> str:
    if amount < 0:
        raise ValueError(f"cannot charge {amount} for {order}")
    return f"charged {amount} for {order}"


attempted: anyio.Event | None = None


@app.task(name="webhook", retries=5, backoff=asyncq.Backoff(base=600, cap=3600))
async def webhook(url: str) -> None:
    if attempted is not None:
        attempted.set()
    raise ConnectionError(f"{url} did not answer")


@app.task(name="report", queue="reports")
async def report(name: str) -> str:
    await asyncq.current_job().set_progress(0.4, "reading orders")
    await anyio.sleep(3600 if name == "yearly" else 0)
    return f"report {name} done"


@app.periodic(every=300, name="digest")
async def digest() -> None:
    pass


async def fill() -> None:
    global attempted
    attempted = anyio.Event()
    jobs = [await charge.enqueue(f"o-{n}", 100 * n) for n in range(1, 6)]
    jobs += [
        await charge.enqueue("o-bad", -5),
        await charge.enqueue("<b>o-html</b>", -1),  # shows as text, never as markup
    ]
    await webhook.enqueue("https://partner.example/hook")
    await charge.options(delay=3600).enqueue("o-later", 700)
    cancelled = await charge.options(delay=3600).enqueue("o-cancelled", 800)
    await cancelled.cancel()
    async with app.worker(concurrency=4, schedules=False):
        for job in jobs:
            try:
                await job.result(timeout=30)
            except asyncq.JobFailed:
                pass
        await attempted.wait()  # its first attempt; the worker settles it as it stops
    await charge.enqueue_many([(f"o-queued-{n}", n) for n in range(20)])  # left waiting
    print(f"filled {app.describe_broker()}: run `asyncq web examples.dashboard_demo:app`")


async def main(once: bool) -> None:
    async with app:
        await fill()
        if once:
            return
        await report.enqueue("yearly")  # runs until Ctrl-C
        print("a worker keeps a long job running; Ctrl-C to stop")
        await app.run_worker(queues=["reports"], concurrency=2, handle_signals=True)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    anyio.run(main, "--once" in sys.argv[1:])
