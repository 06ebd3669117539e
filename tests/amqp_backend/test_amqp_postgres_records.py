"""What is particular to keeping the AMQP backend's records in PostgreSQL (the contract
suite covers the rest, as ``amqp-pg-records``): finished records are deleted by the
workers once they expire, with the keys they held, and the records are rows of the
schema the ``records=`` URL names (counted there directly)."""

from __future__ import annotations

from collections.abc import Iterator

import anyio
import asyncpg
import pytest
import services

import asyncq

from .amqp_support import amqp_postgres_records_url, records_schema

pytestmark = pytest.mark.anyio


@pytest.fixture
def schema(prefix: str) -> Iterator[str]:
    services.require_postgres()
    try:
        yield records_schema(prefix)
    finally:
        services.drop_postgres_schema(records_schema(prefix))


async def test_finished_records_expire_and_free_their_keys(prefix: str, schema: str) -> None:
    app = asyncq.App(amqp_postgres_records_url(prefix, result_ttl=0.5))

    @app.task
    async def job(n: int) -> int:
        return n

    conn = await asyncpg.connect(services.POSTGRES_URL)
    try:
        async with app:
            jobs = await job.enqueue_many([(i,) for i in range(200)])
            keyed = await job.options(key="once").enqueue(-1)
            async with app.worker(concurrency=20):
                assert await jobs[-1].result(timeout=30) == 199
                assert await keyed.result(timeout=30) == -1
                # Expired 0.5 s after each finish; the worker's upkeep (every second)
                # deletes them.
                with anyio.fail_after(10):
                    while await conn.fetchval(f'SELECT count(*) FROM "{schema}".jobs'):  # noqa: ASYNC110
                        await anyio.sleep(0.1)
            with pytest.raises(asyncq.JobNotFound):
                await jobs[0].status()
            again = await job.options(key="once").enqueue(-2)
            assert again.id != keyed.id
    finally:
        await conn.close()
