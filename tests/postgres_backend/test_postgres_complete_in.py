"""``current_job().complete_in(conn)``: a handler's own writes and its job's success in one
transaction. A commit finishes the job with that result (the worker's settle after it
changes nothing, and a worker killed after the commit does not run it again); a rollback
leaves the job to its worker's usual settle; a worker that lost its lease gets
``LeaseLost`` and its transaction rolls back; what cannot join is refused."""

from __future__ import annotations

from pathlib import Path

import anyio
import asyncpg
import pytest
import services
from harness import Lines, worker_process

import asyncq
from asyncq import current_job

pytestmark = pytest.mark.anyio


async def orders(conn: asyncpg.Connection, schema: str) -> list[str]:
    rows = await conn.fetch(f'SELECT id FROM "{schema}".orders ORDER BY id')
    return [r["id"] for r in rows]


async def make_orders_table(conn: asyncpg.Connection, schema: str) -> None:
    await conn.execute(f'CREATE TABLE "{schema}".orders (id text PRIMARY KEY)')


async def test_a_commit_finishes_the_job_with_its_result_and_a_rollback_leaves_it_running(
    url: str, schema: str, conn: asyncpg.Connection
) -> None:
    app = asyncq.App(url)
    attempts: list[int] = []

    @app.task(name="pay.charge", retries=1, backoff=asyncq.Backoff(base=0.01, jitter=False))
    async def charge(order: str) -> str:
        attempt = current_job().attempt
        attempts.append(attempt)
        own = await asyncpg.connect(services.POSTGRES_URL)
        try:
            async with own.transaction():
                await own.execute(
                    f'INSERT INTO "{schema}".orders VALUES ($1)', f"{order}-{attempt}"
                )
                await current_job().complete_in(own, result=f"paid {order}")
                if attempt == 1:
                    raise RuntimeError("card network timeout")  # rolls back both
        finally:
            await own.close()
        return "the handler's own value, not the result"

    async with app:
        await make_orders_table(conn, schema)
        job = await charge.enqueue("o-1")
        async with app.worker(concurrency=2):
            assert await job.result(timeout=10) == "paid o-1"
    assert attempts == [1, 2]  # the rolled-back completion left the job to retry
    assert await orders(conn, schema) == ["o-1-2"]


async def test_a_worker_killed_after_the_commit_does_not_run_the_job_again(
    url: str, schema: str, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    visibility_timeout = 1.0
    broker = f"{url}&visibility_timeout={visibility_timeout}"
    app = asyncq.App(broker)
    reruns: list[str] = []

    @app.task(name="pay.charge")  # the subprocess's apps.complete_in task
    async def charge(order: str) -> str:
        reruns.append(order)
        return "ran again"

    async with app:
        await make_orders_table(conn, schema)
        job = await charge.enqueue("o-2")
        with (tmp_path / "worker.log").open("wb") as log:
            async with worker_process("apps.complete_in:app", broker, stderr=log) as process:
                stdout = Lines(process.stdout)
                await stdout.expect(lambda line: line == f"committed {job.id}", timeout=30)
                assert await job.result(timeout=5) == "paid o-2"  # before any settle
                process.kill()
                with anyio.fail_after(10):
                    assert await process.wait() == -9
        # The scenario, not a synchronisation: the killed worker's lease runs out, and a
        # worker that would rescue a lapsed job claims afterwards.
        await anyio.sleep(visibility_timeout + 0.5)
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: app.run_worker(concurrency=1, burst=True))
        assert reruns == []
        assert await job.status() is asyncq.JobStatus.SUCCEEDED
        assert await job.result(timeout=1) == "paid o-2"
    assert await orders(conn, schema) == ["o-2"]


async def test_a_worker_whose_lease_ran_out_gets_lease_lost_and_writes_nothing(
    url: str, schema: str, conn: asyncpg.Connection
) -> None:
    app = asyncq.App(url)

    @app.task(name="pay.charge", retries=0)
    async def charge(order: str) -> str:
        return order

    async with app:
        await make_orders_table(conn, schema)
        job = await charge.enqueue("o-3")
        (delivery,) = await app.backend.fetch(["default"], 1, timeout=5)
        # Another claim took the job back meanwhile (its lease lapsed): the receipt this
        # delivery holds is stale.
        await conn.execute(f'UPDATE "{schema}".jobs SET lease_until = 0 WHERE id = $1', job.id)
        (again,) = await app.backend.fetch(["default"], 1, timeout=5)
        assert again.receipt == delivery.receipt + 1
        with pytest.raises(asyncq.LeaseLost, match="no longer held by this worker"):
            async with conn.transaction():
                await conn.execute(f'INSERT INTO "{schema}".orders VALUES ($1)', "o-3")
                await app.backend.complete_in_transaction(conn, delivery, b'"stale"', None)
        assert await orders(conn, schema) == []
        assert await job.status() is asyncq.JobStatus.RUNNING  # still the new delivery's


async def test_outside_a_transaction_or_on_another_broker_it_is_refused(
    url: str, conn: asyncpg.Connection
) -> None:
    app = asyncq.App(url)
    seen: list[str] = []

    @app.task(name="pay.charge", retries=0)
    async def charge() -> None:
        with pytest.raises(ValueError, match="needs a connection inside a transaction"):
            await current_job().complete_in(conn)
        with pytest.raises(ValueError, match="asyncpg connection, or a SQLAlchemy"):
            await current_job().complete_in(object())
        seen.append("refused")

    async with app:
        job = await charge.enqueue()
        async with app.worker(concurrency=1):
            await job.result(timeout=10)
    assert seen == ["refused"]

    memory = asyncq.App("memory://complete-in-refused")

    @memory.task(name="t")
    async def t() -> None:
        await current_job().complete_in(conn)

    async with memory:
        refused = await t.enqueue()
        async with memory.worker(concurrency=1):
            with pytest.raises(asyncq.JobFailed) as failed:
                await refused.result(timeout=10)
    assert failed.value.error is not None
    assert "memory broker cannot join" in failed.value.error.message
