"""asyncq through a real PgBouncer (Debian's package) in transaction mode, in front of the
shared server, with fewer server connections than the App's pool: ``pgbouncer=true`` gets a
clear error when missing, a transactional enqueue on the application's own connection
through the bouncer, a warning while the role has no timeouts, and asyncpg's type lookups
kept on one server session. (The whole contract suite also runs through a bouncer:
tests/test_contract.py's ``postgres-pgbouncer`` backend.)"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from urllib.parse import quote

import asyncpg
import pytest
import services

import asyncq

from .postgres_support import PrivatePgBouncer, PrivatePostgres

pytestmark = pytest.mark.anyio


@pytest.fixture
def bouncer() -> Iterator[PrivatePgBouncer]:
    services.require_postgres()
    running = PrivatePgBouncer(server_connections=2)
    running.start()
    try:
        yield running
    finally:
        running.remove()


def build(url: str) -> tuple[asyncq.App, asyncq.Task[[str], str]]:
    app = asyncq.App(url)

    @app.task(name="charge")
    async def charge(order: str) -> str:
        return f"charged {order}"

    return app, charge


async def test_without_pgbouncer_true_the_error_names_the_option(
    bouncer: PrivatePgBouncer, schema: str
) -> None:
    app, _ = build(f"{bouncer.url()}?schema={schema}")
    with pytest.raises(asyncq.ConfigurationError, match="add pgbouncer=true"):
        async with app:
            pass


async def test_a_transactional_enqueue_through_the_bouncer_commits_or_leaves_nothing(
    bouncer: PrivatePgBouncer, schema: str
) -> None:
    app, charge = build(f"{bouncer.url()}?schema={schema}&pgbouncer=true&pool_size=6")
    # The application's own connection through the bouncer: no prepared statements either.
    conn = await asyncpg.connect(bouncer.url(), statement_cache_size=0)
    try:
        async with app:
            await conn.execute(f'CREATE TABLE "{schema}".orders (id text PRIMARY KEY)')
            with pytest.raises(RuntimeError, match="declined"):
                async with conn.transaction():
                    await conn.execute(f'INSERT INTO "{schema}".orders VALUES ($1)', "o-1")
                    await charge.options(connection=conn).enqueue("o-1")
                    raise RuntimeError("card declined")
            async with conn.transaction():
                await conn.execute(f'INSERT INTO "{schema}".orders VALUES ($1)', "o-2")
                committed = await charge.options(connection=conn).enqueue("o-2")
            assert (await app.queue_stats(["default"]))["default"].pending == 1
            async with app.worker(concurrency=20):
                assert await committed.result(timeout=10) == "charged o-2"
                # Many jobs through two server connections: each statement its own turn.
                handles = await charge.enqueue_many([(f"bulk-{i}",) for i in range(300)])
                assert [await h.result(timeout=20) for h in handles[-3:]] == [
                    "charged bulk-297",
                    "charged bulk-298",
                    "charged bulk-299",
                ]
        orders = await conn.fetch(f'SELECT id FROM "{schema}".orders ORDER BY id')
        assert [r["id"] for r in orders] == ["o-2"]
    finally:
        await conn.close()


async def test_listen_url_keeps_wake_ups_instant_through_the_bouncer(
    bouncer: PrivatePgBouncer, schema: str
) -> None:
    # poll_interval=60: within the 10 s below, only notifications can wake the worker (the
    # enqueue comes from another App) and the producer's result wait.
    direct = quote(services.POSTGRES_URL, safe="")
    url = f"{bouncer.url()}?schema={schema}&pgbouncer=true&listen_url={direct}&poll_interval=60"
    worker_app, _ = build(url)
    producer_app, charge = build(url)
    async with worker_app, producer_app, worker_app.worker(concurrency=2):
        for order in ("o-1", "o-2"):
            handle = await charge.enqueue(order)
            assert await handle.result(timeout=10) == f"charged {order}"


async def test_a_role_without_timeouts_is_warned_about_and_one_with_them_is_not(
    bouncer: PrivatePgBouncer,
    schema: str,
    conn: asyncpg.Connection,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="asyncq.postgres")
    app, _ = build(f"{bouncer.url()}?schema={schema}&pgbouncer=true")
    async with app:
        pass
    (warning,) = [r.getMessage() for r in caplog.records]
    assert "statement_timeout and lock_timeout off" in warning
    assert "ALTER ROLE postgres SET statement_timeout" in warning

    # A role of the test's own, with the timeouts set on it, as the warning says.
    role = f"asyncq_{os.urandom(4).hex()}"
    await conn.execute(f"CREATE ROLE {role} LOGIN SUPERUSER")
    try:
        await conn.execute(f"ALTER ROLE {role} SET statement_timeout = '30s'")
        await conn.execute(f"ALTER ROLE {role} SET lock_timeout = '5s'")
        bouncer.add_user(role)
        caplog.clear()
        url = bouncer.url().replace("postgres@", f"{role}@")
        async with asyncq.App(f"{url}?schema={schema}&pgbouncer=true"):
            pass
        assert caplog.records == []
    finally:
        await conn.execute(f"DROP ROLE {role}")


async def test_type_lookups_through_the_bouncer_run_without_jit() -> None:
    # asyncpg turns JIT off around its catalog query, in three statements. Behind a bouncer
    # handing each transaction to the next idle server session, they would run on three
    # sessions and the query with JIT on (0.65 s of compiling on the shared server, which
    # stalled a settle past a 0.3 s lease). A private server counts JIT use per statement.
    server = PrivatePostgres()
    try:
        server.start(
            shared_preload_libraries="pg_stat_statements",
            jit_above_cost="0",  # JIT for every statement allowed to use it
        )
        admin = await asyncpg.connect(server.url)
        try:
            await admin.execute("CREATE EXTENSION pg_stat_statements")
            bouncer = PrivatePgBouncer(
                "127.0.0.1", server.port, server_connections=4, round_robin=True
            )
            bouncer.start()
            try:
                url = f"{bouncer.url('postgres')}?schema=t_jit&pgbouncer=true&pool_size=4"
                app, charge = build(url)
                async with app, app.worker(concurrency=4):
                    handles = await charge.enqueue_many([(f"o-{i}",) for i in range(40)])
                    for i, handle in enumerate(handles):
                        assert await handle.result(timeout=20) == f"charged o-{i}"
            finally:
                bouncer.remove()
            lookups = await admin.fetchrow(
                "SELECT count(*) AS statements, coalesce(sum(calls), 0) AS calls, "
                "coalesce(sum(jit_functions), 0) AS jit FROM pg_stat_statements "
                "WHERE query LIKE '%typeinfo_tree%'"
            )
        finally:
            await admin.close()
    finally:
        server.remove()
    assert lookups["calls"] > 0  # the lookups did run, each connection's once
    assert lookups["jit"] == 0
