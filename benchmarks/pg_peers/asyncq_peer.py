"""asyncq on its ``postgresql://`` backend, through the public API only, in the schema
``bench_asyncq`` (the URL's ``?schema=``), at its defaults otherwise (a pool of 10
connections, ``LISTEN``/``NOTIFY`` wake-ups, results kept a day).

Worker: ``python -m pg_peers.asyncq_peer``, which runs ``app.run_worker(concurrency=N,
handle_signals=True)`` (SIGTERM is a graceful shutdown). Bulk: ``Task.enqueue_many``, one
statement per batch. W5: ``task.options(connection=conn).enqueue()`` on an asyncpg
connection inside ``async with conn.transaction():``, after the order's ``INSERT``.
asyncq creates (migrates) its schema itself when the App opens, so :meth:`install` has
nothing to do. Until the ``postgresql`` backend is installed, building it raises
``asyncq.ConfigurationError`` and the driver reports this library as skipped.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from importlib.metadata import entry_points
from typing import Any

import anyio
import asyncpg

import asyncq

from .common import Kind, Peer, Rollback, concurrency, dsn, probe

__all__ = ["PEER", "SCHEMA", "app"]

SCHEMA = "bench_asyncq"
BROKER = f"{dsn()}?schema={SCHEMA}"
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
    driver = "asyncpg"
    schema = SCHEMA
    has_bulk = True
    has_transaction = True
    settings = (
        f"URL {BROKER}: defaults otherwise (pool_size 10, listen=true, results kept a day)",
    )

    def skip_reason(self) -> str | None:
        try:
            app.backend  # noqa: B018 - resolves the URL through the entry points
        except asyncq.ConfigurationError as exc:
            if not entry_points(group="asyncq.backends", name="postgresql"):
                return "postgresql backend not installed"
            return f"configuration error: {exc}"
        return None

    async def job_count(self, conn: asyncpg.Connection) -> int:
        return int(await conn.fetchval(f"SELECT count(*) FROM {SCHEMA}.jobs"))

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

    @asynccontextmanager
    async def business_connection(self) -> AsyncIterator[Any]:
        conn = await asyncpg.connect(dsn())
        try:
            yield conn
        finally:
            await conn.close()

    async def enqueue_with_order(self, conn: Any, order_id: int, *, fail: bool = False) -> None:
        async with conn.transaction():
            await conn.execute(
                f"INSERT INTO {SCHEMA}.orders (id, amount) VALUES ($1, $2)", order_id, 100
            )
            await noop.options(connection=conn).enqueue()
            if fail:
                raise Rollback

    def worker_command(self, concurrency: int) -> list[str]:
        return [sys.executable, "-m", "pg_peers.asyncq_peer"]


PEER = AsyncqPeer()


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    anyio.run(partial(app.run_worker, concurrency=concurrency(), handle_signals=True))
