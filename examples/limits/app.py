"""The tasks of the limits demo (see demo.py): each records its start and end in a Redis
ledger, so the demo can show what ran when, across worker processes.

The broker is ``$ASYNCQ_BROKER``; the ledger is the Redis at ``$LEDGER_URL`` (default
``redis://127.0.0.1:6379/12``), under ``$LEDGER_KEY``.
"""

from __future__ import annotations

import os
import time

import anyio
import redis.asyncio as redis

import asyncq
from asyncq import ConcurrencyLimit, RateLimit

QUEUE = "limits-demo"
LEDGER = os.environ.get("LEDGER_KEY", "limits-demo")

app = asyncq.App()
_ledger: redis.Redis | None = None


def ledger() -> redis.Redis:
    global _ledger
    if _ledger is None:
        _ledger = redis.Redis.from_url(os.environ.get("LEDGER_URL", "redis://127.0.0.1:6379/12"))
    return _ledger


async def record(task: str, key: str, seconds: float = 0.0) -> None:
    """Log the start (and, after ``seconds`` of work, the end) of one job; the running
    counter is sampled by every start, so its highest value is the most that ran at once."""
    job = asyncq.current_job()
    r = ledger()
    pipe = r.pipeline(transaction=False)
    pipe.incr(f"{LEDGER}:running:{task}")
    pipe.rpush(f"{LEDGER}:starts", f"{time.time()} {task} {key} {os.getpid()} {job.id}")
    running, _ = await pipe.execute()
    await r.rpush(f"{LEDGER}:samples:{task}", f"{time.time()} {running}")
    if seconds:
        await anyio.sleep(seconds)
    pipe = r.pipeline(transaction=False)
    pipe.decr(f"{LEDGER}:running:{task}")
    pipe.rpush(f"{LEDGER}:ends", f"{time.time()} {task} {key} {os.getpid()} {job.id}")
    await pipe.execute()


@app.task(queue=QUEUE, rate_limit="10/s")
async def call_partner_api(n: int) -> None:
    await record("rate", "-")


@app.task(queue=QUEUE)
async def unlimited(n: int) -> None:
    await record("unlimited", "-")


@app.task(queue=QUEUE, rate_limit=RateLimit(5, per=1, key="tenant"))
async def sync_tenant(tenant: str, n: int) -> None:
    await record("tenant", tenant)


@app.task(queue=QUEUE, concurrency_limit=3, retries=0)
async def render_report(n: int) -> None:
    await record("concurrency", "-", seconds=0.5)


@app.task(queue=QUEUE, concurrency_limit=ConcurrencyLimit(1, key="account"))
async def post_ledger(account: str, n: int) -> None:
    await record("account", account, seconds=0.05)
