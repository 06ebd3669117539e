"""Snooze and progress: a job that waits for its data without spending an attempt, then
reports how far it is while it runs.

    python examples/snooze_progress.py       # memory://, well under a second
    ASYNCQ_BROKER=redis://127.0.0.1:6379/0 python examples/snooze_progress.py

``raise asyncq.Snooze(delay)`` runs the job again after ``delay`` with the same attempt
number (the job is SCHEDULED meanwhile, and its retries are untouched);
``current_job().set_progress(value, message)`` stores how far it is on the job's record,
where any process reads it (``job.info().progress``, ``asyncq enqueue --wait``).
"""

from __future__ import annotations

import os

import anyio

import asyncq

BROKER = os.environ.get("ASYNCQ_BROKER", "memory://snooze-progress-example")
app = asyncq.App(BROKER)
upstream_ready = anyio.Event()
"""Stands for data another system delivers: not there on the first run."""


@app.task(retries=0)  # a snooze is not a failure: no retries are needed for it
async def export(rows: int) -> int:
    job = asyncq.current_job()
    if not upstream_ready.is_set():
        print(f"export attempt {job.attempt}: the data is not there yet, snoozing 0.2 s")
        upstream_ready.set()
        raise asyncq.Snooze(0.2)
    step = rows // 4
    for done in range(step, rows + 1, step):
        await job.set_progress(done / rows, f"exported {done} of {rows} rows")
        print(f"export attempt {job.attempt}: {done / rows:.0%}")
    return rows


async def main() -> None:
    async with app, app.worker(concurrency=1):
        job = await export.enqueue(1000)
        exported = await job.result(timeout=10)
        info = await job.info()
    print(
        f"exported {exported} rows on attempt {info.attempt}, snoozed {info.snoozes} time(s); "
        f"last progress: {info.progress}"
    )


if __name__ == "__main__":
    anyio.run(main)
