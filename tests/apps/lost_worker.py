"""The worker the delivery tests kill with SIGKILL: its one task announces the job it
started on stdout, then never finishes. The test names the broker with ``--broker``."""

from __future__ import annotations

import anyio

import asyncq

app = asyncq.App("memory://lost-worker")


@app.task(name="lost.work")
async def work() -> str:
    job = asyncq.current_job()
    print(f"started {job.id} attempt={job.attempt} redelivered={job.redelivered}", flush=True)
    await anyio.sleep_forever()
    return "never"
