"""The claim statement: its order over several queues, and its cost on a deep queue (the
head of the ready index is read, not the whole backlog)."""

from __future__ import annotations

import time

import asyncpg
import pytest

import asyncq

pytestmark = pytest.mark.anyio


def build(url: str) -> tuple[asyncq.App, asyncq.Task[[str], None]]:
    app = asyncq.App(url)

    @app.task(name="mark")
    async def mark(label: str) -> None:
        pass

    return app, mark


async def test_a_claim_over_several_queues_takes_the_highest_priority_first_then_fifo(
    url: str,
) -> None:
    app, mark = build(url)
    async with app:
        first = await mark.options(queue="a", priority=0).enqueue("a0-first")
        await mark.options(queue="a", priority=0).enqueue("a0-second")
        b5 = await mark.options(queue="b", priority=5).enqueue("b5")
        a9 = await mark.options(queue="a", priority=9).enqueue("a9")
        await mark.options(queue="c", priority=9).enqueue("not asked for")

        taken = await app.backend.fetch(["a", "b"], 3, timeout=5)
        assert [d.id for d in taken] == [a9.id, b5.id, first.id]
        rest = await app.backend.fetch(["a", "b"], 10, timeout=5)
        assert [d.queue for d in rest] == ["a"]
        assert (await app.queue_stats(["c"]))["c"].pending == 1


async def test_a_claim_on_a_deep_queue_reads_the_index_head_without_sorting_the_backlog(
    url: str, schema: str, conn: asyncpg.Connection
) -> None:
    """With `queue = ANY(...)` the planner cannot use the ready index's order: every claim
    sorted all ready rows (30 ms at 60,000). auto_explain shows the claim's own plan."""
    app, mark = build(url)
    async with app:
        for _ in range(5):
            await mark.enqueue_many([("x",)] * 1000)
    plans: list[str] = []
    conn.add_log_listener(lambda _conn, message: plans.append(message.message))
    await conn.execute("LOAD 'auto_explain'")
    for setting in (
        "client_min_messages = log",
        "auto_explain.log_min_duration = 0",
        "auto_explain.log_nested_statements = on",
        "auto_explain.log_analyze = on",
    ):
        await conn.execute(f"SET {setting}")
    rows = await conn.fetch(
        f'SELECT * FROM "{schema}".claim($1::text[], 10, $2, 30)', ["default"], time.time()
    )
    assert len(rows) == 10
    (claim_plan,) = [p for p in plans if "SET state = 2" in p]
    assert "jobs_ready" in claim_plan
    assert "Sort" not in claim_plan, claim_plan


async def test_only_a_claims_own_commit_skips_waiting_for_the_disk(
    url: str, schema: str, conn: asyncpg.Connection
) -> None:
    """A lost claim puts its jobs back in line, so its commit need not wait for the WAL
    flush; the setting is local to the claim's transaction, not left on the session."""
    app, mark = build(url)
    async with app:
        await mark.enqueue("x")
    assert await conn.fetchval("SHOW synchronous_commit") == "on"
    async with conn.transaction():
        claimed = await conn.fetch(
            f'SELECT id FROM "{schema}".claim($1::text[], 1, $2, 30)', ["default"], time.time()
        )
        assert len(claimed) == 1
        assert await conn.fetchval("SHOW synchronous_commit") == "off"
    assert await conn.fetchval("SHOW synchronous_commit") == "on"
    # An enqueue (on this connection, as a transactional one would be) stays durable.
    async with app:
        async with conn.transaction():
            await mark.options(connection=conn).enqueue("y")
            assert await conn.fetchval("SHOW synchronous_commit") == "on"
