"""streaq: Redis Streams with a consumer group, via coredis; anyio inside.

Worker: streaq's CLI, ``streaq run peers.streaq_peer:worker``; the tasks are registered
with ``silent=True`` (streaq's documented switch for its two INFO lines per task).
Bulk: ``Worker.enqueue_many``, one pipeline per batch.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from streaq import Worker

from .common import Kind, Peer, probe, redis_url, worker_concurrency

__all__ = ["PEER", "worker"]


@asynccontextmanager
async def lifespan() -> AsyncIterator[None]:
    await probe.open()
    try:
        yield
    finally:
        await probe.close()


worker = Worker(redis_url=redis_url(), concurrency=worker_concurrency(), lifespan=lifespan)


@worker.task(name="noop", silent=True)
async def noop() -> None:
    await probe.count()


@worker.task(name="sleep", silent=True)
async def sleep() -> None:
    await probe.sleep_then_count()


@worker.task(name="latency", silent=True)
async def latency(sent: float) -> None:
    await probe.latency(sent)


TASKS = {"noop": noop, "sleep": sleep}


class StreaqPeer(Peer):
    name = "streaq"
    distribution = "streaq"
    has_bulk = True
    settings = ("tasks registered with silent=True (no per-task INFO log lines)",)

    @asynccontextmanager
    async def producer(self) -> AsyncIterator[None]:
        async with worker:
            yield

    async def enqueue(self, kind: Kind) -> None:
        await TASKS[kind].enqueue()

    async def enqueue_bulk(self, kind: Kind, count: int) -> None:
        task = TASKS[kind]
        await worker.enqueue_many([task.enqueue() for _ in range(count)])

    async def enqueue_latency(self, sent: float) -> None:
        await latency.enqueue(sent)

    def worker_command(self, concurrency: int) -> list[str]:
        return [sys.executable, "-m", "streaq", "run", "peers.streaq_peer:worker"]


PEER = StreaqPeer()
