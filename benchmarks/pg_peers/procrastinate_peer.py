"""procrastinate: a job is a row of ``procrastinate_jobs`` (a trigger NOTIFYs the
workers); a worker fetches one job per statement (``procrastinate_fetch_job_v2``) and
finishes each with another, and keeps finished jobs (``delete_jobs="never"``, its default).

Its objects name no schema, so they live in the first schema of the connection's
``search_path``: every connection here (the connector's pool, the worker's listener, W5's
own) sets ``search_path=bench_procrastinate`` (libpq's ``options``), and its schema is
installed there with its own ``app.schema_manager.apply_schema_async()`` (what
``procrastinate schema --apply`` runs).

Worker: its documented programmatic worker, ``python -m pg_peers.procrastinate_worker``
(a module of its own: procrastinate warns about an App built in ``__main__``), which opens
the App, then the probe (procrastinate has no worker-startup hook), then runs
``app.run_worker_async(concurrency=N)``, which stops gracefully on SIGTERM. Settings
changed: the connector's psycopg pool holds 10 connections (psycopg_pool's default is 4),
the size of asyncq's and asyncpg's default pools; logging at WARNING (its CLI's default is
INFO: two lines per job). Bulk: ``Task.batch_defer_async``, one statement per batch. W5:
``task.configure(connection=conn).defer_async()`` on a psycopg ``AsyncConnection`` inside
``async with conn.transaction():`` (``configure``'s ``connection``: "the job INSERT will
run on this connection ... allowing atomic deferral within a user-managed transaction").
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import procrastinate
import psycopg

from .common import Kind, Peer, Rollback, concurrency, dsn, probe

__all__ = ["PEER", "app", "run_worker"]

SCHEMA = "bench_procrastinate"
OPTIONS = f"-c search_path={SCHEMA}"
"""libpq's ``options`` of every connection: procrastinate's objects are found through
``search_path``."""
POOL_SIZE = 10

app = procrastinate.App(
    connector=procrastinate.PsycopgConnector(
        conninfo=dsn(), kwargs={"options": OPTIONS}, min_size=POOL_SIZE, max_size=POOL_SIZE
    )
)


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


class ProcrastinatePeer(Peer):
    name = "procrastinate"
    distribution = "procrastinate"
    driver = "psycopg"
    schema = SCHEMA
    has_bulk = True
    has_transaction = True
    settings = (
        f"search_path={SCHEMA} on every connection (its objects name no schema)",
        f"psycopg pool of {POOL_SIZE} (min_size = max_size; psycopg_pool's default is 4)",
        "worker: app.run_worker_async(concurrency=N), delete_jobs never (its default); "
        "logging at WARNING (its CLI logs two INFO lines per job)",
    )

    async def install(self, conn: asyncpg.Connection) -> None:
        await conn.execute(f"CREATE SCHEMA {SCHEMA}")
        async with app.open_async():
            await app.schema_manager.apply_schema_async()

    async def job_count(self, conn: asyncpg.Connection) -> int:
        return int(await conn.fetchval(f"SELECT count(*) FROM {SCHEMA}.procrastinate_jobs"))

    @asynccontextmanager
    async def producer(self) -> AsyncIterator[None]:
        async with app.open_async():
            yield

    async def enqueue(self, kind: Kind) -> None:
        await TASKS[kind].defer_async()

    async def enqueue_bulk(self, kind: Kind, count: int) -> None:
        await TASKS[kind].batch_defer_async(*[{}] * count)

    async def enqueue_latency(self, sent: float) -> None:
        await latency.defer_async(sent=sent)

    @asynccontextmanager
    async def business_connection(self) -> AsyncIterator[Any]:
        async with await psycopg.AsyncConnection.connect(
            dsn(), autocommit=True, options=OPTIONS
        ) as conn:
            yield conn

    async def enqueue_with_order(self, conn: Any, order_id: int, *, fail: bool = False) -> None:
        async with conn.transaction():
            await conn.execute(
                f"INSERT INTO {SCHEMA}.orders (id, amount) VALUES (%s, %s)", (order_id, 100)
            )
            await noop.configure(connection=conn).defer_async()
            if fail:
                raise Rollback

    def worker_command(self, concurrency: int) -> list[str]:
        return [sys.executable, "-m", "pg_peers.procrastinate_worker"]


PEER = ProcrastinatePeer()


async def run_worker() -> None:
    """One worker process until SIGTERM (``pg_peers.procrastinate_worker``)."""
    async with app.open_async():
        await probe.open()
        try:
            await app.run_worker_async(concurrency=concurrency())
        finally:
            await probe.close()
