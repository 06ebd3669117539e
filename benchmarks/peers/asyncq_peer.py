"""asyncq, through the public API only, on the broker ``$BENCH_ASYNCQ_BROKER`` names (its
Redis Streams backend unless told; ``amqp_peers.asyncq_peer`` points it at RabbitMQ).

Worker: ``python -m peers.asyncq_peer``, which runs ``app.run_worker(concurrency=N,
handle_signals=True)`` (SIGTERM is a graceful shutdown). Bulk: ``Task.enqueue_many``, one
round trip per batch. Until a backend for the URL's scheme is installed, building it raises
``asyncq.ConfigurationError`` and the driver reports this library as skipped.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from importlib.metadata import entry_points
from urllib.parse import urlsplit

import anyio

import asyncq

from .common import Kind, Peer, probe, redis_url, worker_concurrency

__all__ = ["PEER", "app"]

BROKER = os.environ.get("BENCH_ASYNCQ_BROKER") or f"{redis_url()}?prefix=asyncq-bench"
"""The broker URL; the driver's environment reaches the worker processes too."""

app = asyncq.App(BROKER)


@app.lifespan
async def lifespan(app: asyncq.App) -> AsyncIterator[None]:
    await probe.open()
    try:
        yield
    finally:
        await probe.close()


@app.task(name="noop")
async def noop() -> None:
    await probe.count()


@app.task(name="sleep")
async def sleep() -> None:
    await probe.sleep_then_count()


@app.task(name="latency")
async def latency(sent: float) -> None:
    await probe.latency(sent)


TASKS = {"noop": noop, "sleep": sleep}


class AsyncqPeer(Peer):
    name = "asyncq"
    distribution = "asyncq"
    has_bulk = True

    def skip_reason(self) -> str | None:
        try:
            app.backend  # noqa: B018 - resolves the URL through the entry points
        except asyncq.ConfigurationError as exc:
            scheme = urlsplit(BROKER).scheme
            if not entry_points(group="asyncq.backends", name=scheme):
                return f"{scheme} backend not installed"
            return f"configuration error: {exc}"
        return None

    @asynccontextmanager
    async def producer(self) -> AsyncIterator[None]:
        async with app:
            yield

    async def enqueue(self, kind: Kind) -> None:
        await TASKS[kind].enqueue()

    async def enqueue_bulk(self, kind: Kind, count: int) -> None:
        await TASKS[kind].enqueue_many([()] * count)

    async def enqueue_latency(self, sent: float) -> None:
        await latency.enqueue(sent)

    def worker_command(self, concurrency: int) -> list[str]:
        return [sys.executable, "-m", "peers.asyncq_peer"]


PEER = AsyncqPeer()


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    anyio.run(partial(app.run_worker, concurrency=worker_concurrency(), handle_signals=True))
