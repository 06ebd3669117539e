"""pgqueuer: a job is a row of its ``pgqueuer`` table (a trigger NOTIFYs the workers);
workers take batches with ``FOR UPDATE SKIP LOCKED`` and log each finished job.

Its objects live in the schema ``bench_pgqueuer`` (its ``PGQUEUER_SCHEMA`` setting, set
below before pgqueuer is imported; the workers inherit it), installed with its own
``Queries.install()`` (what ``pgq install`` runs) at its default durability, ``durable``
(logged tables, as asyncq's and procrastinate's are; ``balanced`` and ``volatile`` lose
jobs in a crash).

Worker: pgqueuer's factory pattern, :func:`create`, run by its documented programmatic
``pgqueuer.run(factory, ...)`` under ``asyncio.run`` (stock asyncio, like the other
libraries; ``$BENCH_PGQUEUER_LOOP=uvloop`` runs its CLI instead, ``pgq run``, which picks
uvloop, a dependency of pgqueuer). Its fast settings, from its performance-tuning guide:
``batch_size`` ``$BENCH_PGQUEUER_BATCH`` (50; its default is 10, and the guide says to
raise it for short jobs), ``max_concurrent_tasks`` = the concurrency (100; it must be at
least twice the batch; without it a worker takes every job it can), and an asyncpg pool
(``PgQueuer.from_asyncpg_pool``, the guide's choice for high throughput; asyncpg's default
size, 10) rather than one connection. The producer enqueues through ``Queries`` on such a
pool too. Bulk: ``Queries.enqueue`` with lists, one statement per batch. W5: ``Queries``
over the application's asyncpg connection, ``queries.enqueue(...)`` inside
``async with conn.transaction():`` (its README's "Enqueue inside a transaction").
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import asyncpg

from .common import Kind, Peer, Rollback, concurrency, dsn, probe

SCHEMA = "bench_pgqueuer"
# Before pgqueuer is imported: it reads its settings from the environment once.
os.environ["PGQUEUER_SCHEMA"] = SCHEMA

import pgqueuer  # noqa: E402
from pgqueuer import AsyncpgDriver, AsyncpgPoolDriver, Job, PgQueuer, Queries  # noqa: E402

__all__ = ["PEER", "create"]

BATCH = int(os.environ.get("BENCH_PGQUEUER_BATCH", "50"))
"""Jobs a worker takes per dequeue (``batch_size``)."""
LOOP = os.environ.get("BENCH_PGQUEUER_LOOP", "asyncio")
"""``asyncio``: ``pgqueuer.run`` under ``asyncio.run``; ``uvloop``: ``pgq run``."""


async def noop(job: Job) -> None:
    await probe.count()


async def sleep(job: Job) -> None:
    await probe.sleep_then_count()


async def latency(job: Job) -> None:
    assert job.payload is not None
    await probe.latency(float(job.payload))


@asynccontextmanager
async def create() -> AsyncIterator[PgQueuer]:
    """The worker's factory (``pgq run pg_peers.pgqueuer_peer:create``); the probe opens
    in it, pgqueuer's hook before the worker runs."""
    pool = await asyncpg.create_pool(dsn())
    try:
        pgq = PgQueuer.from_asyncpg_pool(pool)
        pgq.entrypoint("noop")(noop)
        pgq.entrypoint("sleep")(sleep)
        pgq.entrypoint("latency")(latency)
        await probe.open()
        try:
            yield pgq
        finally:
            await probe.close()
    finally:
        await pool.close()


class PgqueuerPeer(Peer):
    name = "pgqueuer"
    distribution = "pgqueuer"
    driver = "asyncpg"
    schema = SCHEMA
    has_bulk = True
    has_transaction = True
    settings = (
        f"schema {SCHEMA} (PGQUEUER_SCHEMA), durability durable (its default)",
        f"worker: batch_size {BATCH} (default 10), max_concurrent_tasks = concurrency, "
        "an asyncpg pool of 10 (PgQueuer.from_asyncpg_pool); "
        + (
            "pgq run (its CLI, on uvloop)"
            if LOOP == "uvloop"
            else "pgqueuer.run() under asyncio.run (stock asyncio; pgq run would use uvloop)"
        ),
        "producer: Queries over an asyncpg pool of 10",
    )

    def __init__(self) -> None:
        self._pool: asyncpg.Pool | None = None
        self._queries: Queries | None = None
        self._tx_queries: Queries | None = None

    async def install(self, conn: asyncpg.Connection) -> None:
        await Queries(AsyncpgDriver(conn)).install()

    async def job_count(self, conn: asyncpg.Connection) -> int:
        return int(await conn.fetchval(f"SELECT count(*) FROM {SCHEMA}.pgqueuer"))

    @asynccontextmanager
    async def producer(self) -> AsyncIterator[None]:
        self._pool = await asyncpg.create_pool(dsn())
        self._queries = Queries(AsyncpgPoolDriver(self._pool))
        try:
            yield
        finally:
            self._queries = None
            await self._pool.close()
            self._pool = None

    @property
    def queries(self) -> Queries:
        assert self._queries is not None, "use inside producer()"
        return self._queries

    async def enqueue(self, kind: Kind) -> None:
        await self.queries.enqueue(kind, None)

    async def enqueue_bulk(self, kind: Kind, count: int) -> None:
        await self.queries.enqueue([kind] * count, [None] * count, [0] * count)

    async def enqueue_latency(self, sent: float) -> None:
        await self.queries.enqueue("latency", repr(sent).encode())

    @asynccontextmanager
    async def business_connection(self) -> AsyncIterator[Any]:
        conn = await asyncpg.connect(dsn())
        self._tx_queries = Queries(AsyncpgDriver(conn))
        try:
            yield conn
        finally:
            self._tx_queries = None
            await conn.close()

    async def enqueue_with_order(self, conn: Any, order_id: int, *, fail: bool = False) -> None:
        queries = self._tx_queries
        assert queries is not None, "use inside business_connection()"
        async with conn.transaction():
            await conn.execute(
                f"INSERT INTO {SCHEMA}.orders (id, amount) VALUES ($1, $2)", order_id, 100
            )
            await queries.enqueue("noop", None)
            if fail:
                raise Rollback

    def worker_command(self, concurrency: int) -> list[str]:
        if LOOP == "uvloop":
            return [
                *(sys.executable, "-m", "pgqueuer", "--schema", SCHEMA, "run"),
                "pg_peers.pgqueuer_peer:create",
                *("--batch-size", str(BATCH), "--max-concurrent-tasks", str(concurrency)),
                *("--log-level", "WARNING"),
            ]
        return [sys.executable, "-m", "pg_peers.pgqueuer_peer"]


PEER = PgqueuerPeer()


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("pgqueuer").setLevel(logging.WARNING)
    asyncio.run(
        pgqueuer.run(
            create,
            batch_size=BATCH,
            max_concurrent_tasks=concurrency(),
            dequeue_timeout=timedelta(seconds=30),  # pgq run's default
        )
    )
