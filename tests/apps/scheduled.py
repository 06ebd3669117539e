"""The app of the ``asyncq schedules`` tests: two schedules, a cron one and an every= one,
and a task that reports progress for ``asyncq enqueue --wait``."""

from __future__ import annotations

import anyio

import asyncq

app = asyncq.App("memory://cli-scheduled")

resized = anyio.Event()
"""Set by a test to let ``resize`` finish; a test that uses it first replaces it."""


@app.periodic("0 3 * * *", name="nightly", timezone="Europe/Berlin")
async def nightly() -> None: ...


@app.periodic(every=3600, name="hourly", overlap=False)
async def hourly() -> None: ...


@app.task(name="resize")
async def resize(images: int) -> int:
    await asyncq.current_job().set_progress(0.5, f"resized {images // 2} of {images}")
    await resized.wait()
    return images
