"""Jobs written in the caller's own transaction (``task.options(connection=...)``): on an
asyncpg connection and on SQLAlchemy's AsyncConnection and AsyncSession, a rollback leaves
no job, a commit runs it; and the connection kinds that cannot join are refused before
anything is sent."""

from __future__ import annotations

import anyio
import asyncpg
import pytest
import sqlalchemy
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

import asyncq

pytestmark = pytest.mark.anyio


def build(url: str) -> tuple[asyncq.App, asyncq.Task[[str], str]]:
    app = asyncq.App(url)

    @app.task(name="charge")
    async def charge(order: str) -> str:
        return f"charged {order}"

    return app, charge


async def orders(conn: asyncpg.Connection, schema: str) -> list[str]:
    rows = await conn.fetch(f'SELECT id FROM "{schema}".orders ORDER BY id')
    return [r["id"] for r in rows]


async def make_orders_table(conn: asyncpg.Connection, schema: str) -> None:
    # The application's own table, in the test's schema (created by the App's first open).
    await conn.execute(f'CREATE TABLE "{schema}".orders (id text PRIMARY KEY)')


async def pending(app: asyncq.App) -> int:
    return (await app.queue_stats(["default"]))["default"].pending


async def stored(job: asyncq.Job[str]) -> bool:
    try:
        await job.status()
    except asyncq.JobNotFound:
        return False
    return True


async def run_one(app: asyncq.App, job: asyncq.Job[str]) -> str:
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: app.run_worker(concurrency=4, burst=True))
    return await job.result(timeout=10)


async def test_asyncpg_rollback_leaves_no_job_and_commit_runs_it(
    url: str, schema: str, conn: asyncpg.Connection
) -> None:
    app, charge = build(url)
    async with app:
        await make_orders_table(conn, schema)
        with pytest.raises(RuntimeError, match="payment declined"):
            async with conn.transaction():
                await conn.execute(f'INSERT INTO "{schema}".orders VALUES ($1)', "o-1")
                rolled_back = await charge.options(connection=conn).enqueue("o-1")
                raise RuntimeError("payment declined")
        assert not await stored(rolled_back)
        assert await pending(app) == 0

        async with conn.transaction():
            await conn.execute(f'INSERT INTO "{schema}".orders VALUES ($1)', "o-2")
            committed = await charge.options(connection=conn).enqueue("o-2")
            # Not visible outside the transaction until it commits.
            assert not await stored(committed)
        assert await committed.status() is asyncq.JobStatus.QUEUED
        assert await orders(conn, schema) == ["o-2"]
        assert await run_one(app, committed) == "charged o-2"


async def test_enqueue_many_in_a_transaction_is_one_unit(
    url: str, schema: str, conn: asyncpg.Connection
) -> None:
    app, charge = build(url)
    async with app:
        with pytest.raises(RuntimeError):
            async with conn.transaction():
                await charge.options(connection=conn).enqueue_many([("a",), ("b",), ("c",)])
                raise RuntimeError("abort")
        assert await pending(app) == 0
        async with conn.transaction():
            jobs = await charge.options(connection=conn).enqueue_many([("a",), ("b",)])
        assert await pending(app) == 2
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: app.run_worker(concurrency=4, burst=True))
        assert [await j.result(timeout=10) for j in jobs] == ["charged a", "charged b"]


async def test_a_pooled_connection_outside_a_transaction_gets_one_of_its_own(url: str) -> None:
    app, charge = build(url)
    pool = await asyncpg.create_pool(url.split("?")[0], min_size=1, max_size=1)
    try:
        async with app, pool.acquire() as conn:
            job = await charge.options(connection=conn).enqueue("o-9")
            assert await job.status() is asyncq.JobStatus.QUEUED
    finally:
        await pool.close()


async def test_a_commit_wakes_a_waiting_worker_at_once(url: str, conn: asyncpg.Connection) -> None:
    app, charge = build(url)
    async with app:
        started = anyio.Event()
        results: list[str] = []

        async def worker() -> None:
            started.set()
            await app.run_worker(concurrency=2, max_jobs=1)

        async with anyio.create_task_group() as tg:
            tg.start_soon(worker)
            await started.wait()
            async with conn.transaction():
                job = await charge.options(connection=conn).enqueue("o-3")
            results.append(await job.result(timeout=5))
        assert results == ["charged o-3"]


def sqlalchemy_url(url: str) -> str:
    return url.split("?")[0].replace("postgresql://", "postgresql+asyncpg://")


async def test_sqlalchemy_connection_rollback_and_commit(url: str, schema: str) -> None:
    app, charge = build(url)
    engine = create_async_engine(sqlalchemy_url(url))
    try:
        async with app:
            insert = sqlalchemy.text(f'INSERT INTO "{schema}".orders VALUES (:id)')
            async with engine.begin() as sa:
                await sa.execute(sqlalchemy.text(f'CREATE TABLE "{schema}".orders (id text)'))
            with pytest.raises(RuntimeError):
                async with engine.begin() as sa:
                    # The job first, before any statement of SQLAlchemy's own: its lazy
                    # BEGIN must still cover the job.
                    gone = await charge.options(connection=sa).enqueue("o-4")
                    await sa.execute(insert, {"id": "o-4"})
                    raise RuntimeError("abort")
            assert not await stored(gone)
            async with engine.begin() as sa:
                kept = await charge.options(connection=sa).enqueue("o-5")
                await sa.execute(insert, {"id": "o-5"})
            assert await run_one(app, kept) == "charged o-5"
    finally:
        await engine.dispose()


async def test_sqlalchemy_session_rollback_and_commit(url: str, schema: str) -> None:
    app, charge = build(url)
    engine = create_async_engine(sqlalchemy_url(url))
    try:
        async with app:
            async with AsyncSession(engine) as session:
                gone = await charge.options(connection=session).enqueue("o-6")
                await session.rollback()
            assert not await stored(gone)
            async with AsyncSession(engine) as session, session.begin():
                kept = await charge.options(connection=session).enqueue("o-7")
            assert await run_one(app, kept) == "charged o-7"
    finally:
        await engine.dispose()


async def test_what_cannot_join_is_refused_before_anything_is_sent(url: str) -> None:
    app, charge = build(url)
    with pytest.raises(ValueError, match="asyncpg connection, or a SQLAlchemy"):
        charge.options(connection=object())
    memory = asyncq.App("memory://refuses")

    @memory.task(name="t")
    async def t() -> None: ...

    with pytest.raises(ValueError, match="memory broker cannot join"):
        t.options(connection=object())
