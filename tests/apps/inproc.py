"""The app of the in-process CLI tests; each test points it at its own ``memory://`` broker
with ``--broker`` (which calls ``app.use_broker``) and runs burst workers on it in between."""

from __future__ import annotations

import asyncq

app = asyncq.App("memory://cli-inproc", backoff=asyncq.Backoff(base=0.01, cap=0.05))

attempts: dict[str, list[int]] = {}
"""The attempt number of every run of ``always_fails``, by job id."""


@app.task(name="add")
async def add(a: int, b: int) -> int:
    return a + b


@app.task(name="always_fails", retries=1)
async def always_fails(reason: str) -> None:
    job = asyncq.current_job()
    attempts.setdefault(job.id, []).append(job.attempt)
    raise ValueError(reason)
