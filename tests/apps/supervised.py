"""The worker of the tests of ``asyncq run`` on a real broker (named with ``--broker``): its
one task prints "started <id>" when it runs, sleeps the seconds it is given, then prints
"finished <id>"."""

from __future__ import annotations

import anyio

import asyncq

app = asyncq.App("memory://supervised")


@app.task(name="supervised.nap")
async def nap(seconds: float) -> None:
    job = asyncq.current_job()
    print(f"started {job.id}", flush=True)
    await anyio.sleep(seconds)
    print(f"finished {job.id}", flush=True)
