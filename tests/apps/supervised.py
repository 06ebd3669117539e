"""The worker of the tests of ``asyncq run`` on a real broker (named with ``--broker``): its
one task prints "started <id>" when it runs, sleeps the seconds it is given, then prints
"finished <id>"."""

from __future__ import annotations

import anyio

import asyncq

from .output import print_line

app = asyncq.App("memory://supervised")


@app.task(name="supervised.nap")
async def nap(seconds: float) -> None:
    job = asyncq.current_job()
    print_line(f"started {job.id}")
    await anyio.sleep(seconds)
    print_line(f"finished {job.id}")
