"""Its lifespan enqueues three jobs, each printing a line when it runs: for ``--burst``."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncq

from .output import print_line

app = asyncq.App("memory://cli-burst")


@app.task(name="say")
async def say(n: int) -> None:
    print_line(f"ran {n}")


@app.lifespan
async def lifespan(app: asyncq.App) -> AsyncIterator[None]:
    await say.enqueue_many([(n,) for n in range(3)])
    yield
