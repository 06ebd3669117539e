"""The quickstart's tasks, on the App a worker runs as
``asyncq run examples.quickstart_tasks:app``.

The App names no broker, so it is on the embedded default: ``sqlite:///asyncq.db``, a file in
the working directory that every process started there shares (see ``quickstart.py``).
"""

from __future__ import annotations

import asyncq

app = asyncq.App(
    # Short, deterministic backoff so the retry below happens within the demo's second.
    backoff=asyncq.Backoff(base=0.1, jitter=False),
)


@app.task
async def add(a: int, b: int) -> int:
    return a + b


@app.task(retries=3)
async def flaky_fetch(url: str) -> str:
    """Fails on its first attempt, as a downstream service sometimes does."""
    job = asyncq.current_job()
    if job.attempt == 1:
        raise ConnectionError(f"{url} did not answer")  # retried after the backoff
    return f"fetched {url} on attempt {job.attempt}"


@app.task
async def remind(text: str) -> str:
    return f"reminder: {text}"


@app.task
async def charge(amount_cents: int) -> int:
    if amount_cents <= 0:
        # Bad input will not get better with a retry: dead-letter it at once.
        raise asyncq.Reject(f"cannot charge {amount_cents} cents")
    return amount_cents
