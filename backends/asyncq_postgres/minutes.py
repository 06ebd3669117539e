"""Per-minute counts of finished attempts (:mod:`asyncq.throughput`) in ``minute_counts``.

Every settle of every worker adds to the current minute's row of its queue, so one row per
(queue, minute) would have them all wait for one another's row lock until commit. Each
settle picks one of ``SHARDS`` rows at random instead; a read sums them."""

from __future__ import annotations

import random
import time
from collections.abc import Sequence

import asyncpg

from asyncq.records import MinuteCounts
from asyncq.settlement import Settlement
from asyncq.throughput import KEPT, MINUTE, count_batch, minute_of

__all__ = ["SHARDS", "add", "read", "shard", "sweep", "upsert"]

SHARDS = 16


def shard() -> int:
    return random.randrange(SHARDS)


def upsert(s: str) -> str:
    """An ``INSERT ... ON CONFLICT`` adding to a minute's row; its rows come after it."""
    return (
        f"INSERT INTO {s}.minute_counts AS m (queue, minute, shard, succeeded, failed) {{rows}} "
        "ON CONFLICT (queue, minute, shard) DO UPDATE SET "
        "succeeded = m.succeeded + excluded.succeeded, failed = m.failed + excluded.failed"
    )


async def add(
    conn: asyncpg.Connection, s: str, settlements: Sequence[Settlement], now: float
) -> None:
    """Count ``settlements`` (in the caller's transaction)."""
    counts = count_batch(settlements)
    if not counts:
        return
    rows = (
        "SELECT q, $2::bigint, $3::smallint, ok, bad "
        "FROM unnest($1::text[], $4::int[], $5::int[]) AS u(q, ok, bad)"
    )
    await conn.execute(
        upsert(s).format(rows=rows),
        list(counts),
        minute_of(now),
        shard(),
        [n[0] for n in counts.values()],
        [n[1] for n in counts.values()],
    )


async def read(
    conn: asyncpg.Connection, s: str, queues: Sequence[str], minutes: int
) -> list[MinuteCounts]:
    now = time.time()
    since = max(minute_of(now) - (minutes - 1) * MINUTE, minute_of(now - KEPT))
    rows = await conn.fetch(
        f"SELECT queue, minute, sum(succeeded) AS ok, sum(failed) AS bad "
        f"FROM {s}.minute_counts WHERE queue = ANY($1::text[]) AND minute >= $2 "
        "GROUP BY queue, minute ORDER BY minute, queue",
        list(queues),
        since,
    )
    return [MinuteCounts(r["queue"], int(r["minute"]), int(r["ok"]), int(r["bad"])) for r in rows]


async def sweep(conn: asyncpg.Connection, s: str, now: float) -> None:
    await conn.execute(f"DELETE FROM {s}.minute_counts WHERE minute <= $1", now - KEPT)
