"""What keeps a ``postgresql://`` broker's tables small under a steady load: finished jobs'
rows deleted once their records expire, in batches of ``EXPIRE_BATCH`` (each its own short
transaction, rows another worker is deleting skipped, not waited for), so autovacuum finds
dead tuples spread over many small transactions and the table stops growing once rows go
as fast as they come; and the other tables' stale rows."""

from __future__ import annotations

import logging

import asyncpg

from asyncq.store import ORDER_SKIP_AFTER

from . import limits

__all__ = ["EXPIRE_BATCH", "expire_jobs", "sweep", "warn_without_autovacuum"]

log = logging.getLogger("asyncq.postgres")

EXPIRE_BATCH = 2000
CANCELLATION_RETENTION = 600.0
"""Seconds a cancellation request is kept for the workers to read."""


async def expire_jobs(conn: asyncpg.Connection, s: str, now: float) -> int:
    """Delete up to ``EXPIRE_BATCH`` finished jobs whose records expired; how many."""
    status = await conn.execute(
        f"DELETE FROM {s}.jobs WHERE seq IN (SELECT seq FROM {s}.jobs WHERE state = 3 "
        "AND expires_at <= $1 LIMIT $2 FOR UPDATE SKIP LOCKED)",
        now,
        EXPIRE_BATCH,
    )
    return int(status.rsplit(" ", 1)[-1])


async def sweep(conn: asyncpg.Connection, s: str, now: float) -> None:
    """The small tables' stale rows, in one round trip (the schema's ``sweep()``)."""
    await conn.execute(
        f"SELECT {s}.sweep($1, $2, $3, $4, $5, $6)",
        now,
        CANCELLATION_RETENTION,
        limits.CONCURRENCY_WAITER_GONE,
        limits.RATE_WAITER_GONE,
        limits.CONCURRENCY_KEY_QUIET,
        ORDER_SKIP_AFTER,
    )


async def warn_without_autovacuum(conn: asyncpg.Connection, s: str) -> None:
    """Deleted rows leave dead tuples that only VACUUM makes room from: with autovacuum off
    (on the server, or on the jobs table), the table and its indexes grow without end."""
    server = await conn.fetchval("SELECT current_setting('autovacuum')")
    table = await conn.fetchval(
        "SELECT coalesce(bool_or(o = 'autovacuum_enabled=false'), false) "
        "FROM pg_class, unnest(coalesce(reloptions, '{}')) o WHERE oid = $1::regclass",
        f"{s}.jobs",
    )
    if server != "on" or table:
        where = "on this server" if server != "on" else f"on {s}.jobs"
        log.warning(
            "postgres: autovacuum is off %s: finished jobs' deleted rows are never reclaimed "
            "and %s.jobs grows without end; turn autovacuum on, or VACUUM it regularly",
            where,
            s,
        )
