"""Its lifespan enqueues three jobs that print "started <n>", take $SLOW_JOB_SECONDS
(default 1) and print "finished <n>": for the graceful-shutdown tests."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import anyio

import asyncq

from .output import print_line

app = asyncq.App("memory://cli-slow")


@app.task(name="slow")
async def slow(n: int) -> None:
    print_line(f"started {n}")
    await anyio.sleep(float(os.environ.get("SLOW_JOB_SECONDS", "1")))
    print_line(f"finished {n}")


@app.lifespan
async def lifespan(app: asyncq.App) -> AsyncIterator[None]:
    await slow.enqueue_many([(n,) for n in range(3)])
    yield
