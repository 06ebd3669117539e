"""Jobs that print "ran <n> <pid> <attempt>" and keep $LEAK_MB megabytes each (default 0)
for as long as the process lives: for the worker recycling tests (``--max-jobs``,
``--max-memory``). The broker comes from ``--broker``; $JOB_SECONDS (default 0) is how long
each job takes."""

from __future__ import annotations

import os

import anyio

import asyncq

from .output import print_line

app = asyncq.App("memory://cli-recycling")

LEAKED: list[bytes] = []


@app.task(name="leaky", queue="recycling")
async def leaky(n: int) -> None:
    # Random bytes: every page is touched, so the leak shows in the resident memory.
    LEAKED.append(os.urandom(int(float(os.environ.get("LEAK_MB", "0")) * 1024 * 1024)))
    await anyio.sleep(float(os.environ.get("JOB_SECONDS", "0")))
    print_line(f"ran {n} {os.getpid()} {asyncq.current_job().attempt}")
