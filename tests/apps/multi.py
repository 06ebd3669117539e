"""Each worker process prints "ready <pid>" from a job, so the line appears only once the
worker is fetching jobs (and handles SIGTERM itself): for the ``--processes`` tests."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import asyncq

from .output import print_line

app = asyncq.App("memory://cli-multi")


@app.task(name="announce")
async def announce() -> None:
    print_line(f"ready {os.getpid()}")


@app.lifespan
async def lifespan(app: asyncq.App) -> AsyncIterator[None]:
    await announce.enqueue()
    yield
