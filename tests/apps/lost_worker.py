"""The worker the delivery tests kill with SIGKILL: its one task announces the job it
started on stdout, then never finishes. The test names the broker with ``--broker``."""

from __future__ import annotations

import anyio

import asyncq

from .output import print_line

app = asyncq.App("memory://lost-worker")


@app.task(name="lost.work")
async def work() -> str:
    job = asyncq.current_job()
    print_line(f"started {job.id} attempt={job.attempt} redelivered={job.redelivered}")
    await anyio.sleep_forever()
    return "never"
