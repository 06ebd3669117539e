"""The rate and concurrency limits of a ``postgresql://`` broker, with the semantics of the
memory, SQLite and Redis ones (see :mod:`asyncq.store`). Each request is one transaction
that first takes a transaction-scoped advisory lock on its key, so requests for one key are
serialised across every worker while requests for different keys run side by side."""

from __future__ import annotations

import time
from collections.abc import Sequence

import asyncpg

from asyncq.memory_limits import concurrency_wait
from asyncq.records import ConcurrencyRequest, Permit, RateRequest
from asyncq.store import ORDER_SKIP_AFTER

__all__ = [
    "CONCURRENCY_KEY_QUIET",
    "CONCURRENCY_WAITER_GONE",
    "RATE_WAITER_GONE",
    "release_concurrency",
    "renew_concurrency",
    "take_concurrency",
    "take_rate",
    "take_tickets",
    "void_tickets",
]

CONCURRENCY_WAITER_GONE = 2.0
"""Seconds after its time: a concurrency waiter that has not come back never will."""
CONCURRENCY_KEY_QUIET = 30.0
"""Seconds without a request after which a concurrency key's state goes."""
RATE_WAITER_GONE = 10.0 + CONCURRENCY_WAITER_GONE
"""Seconds after which any rate waiter is given up (past the longest :func:`_grace`)."""
_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended($1, 7))"


def _grace(per: float) -> float:
    """How long after its time a rate waiter that has not come back is given up."""
    return max(1.0, min(per, 10.0))


async def take_rate(
    conn: asyncpg.Connection, s: str, requests: Sequence[RateRequest]
) -> list[float]:
    out = []
    for request in requests:
        key, limit, per, token = request.key, request.limit, request.per, request.token
        async with conn.transaction():
            await conn.execute(_LOCK, "rate " + key)
            now = time.time()
            # A permit's row says when it leaves the window; one that has is gone.
            await conn.execute(
                f"DELETE FROM {s}.rate_permits WHERE key = $1 AND until <= $2", key, now
            )
            await conn.execute(
                f"DELETE FROM {s}.rate_waiters WHERE key = $1 AND at <= $2", key, now - _grace(per)
            )
            taken = await conn.fetchval(
                f"SELECT count(*) FROM {s}.rate_permits WHERE key = $1", key
            )
            waiters = [
                (r["at"], r["token"])
                for r in await conn.fetch(
                    f"SELECT at, token FROM {s}.rate_waiters WHERE key = $1", key
                )
            ]
            ahead = len(waiters)
            returning = any(t == token for _, t in waiters)
            # A free permit goes to a waiter coming back, or to a newcomer if it leaves
            # enough for every waiter still to come: newcomers do not jump the line.
            if (returning and taken < limit) or taken + ahead < limit:
                await conn.execute(
                    f"DELETE FROM {s}.rate_waiters WHERE key = $1 AND token = $2", key, token
                )
                await conn.execute(f"INSERT INTO {s}.rate_permits VALUES ($1, $2)", key, now + per)
                out.append(0.0)
                continue
            if returning:  # permits come free later than foretold: it keeps its place
                until = await _nth_until(conn, s, key, taken - limit)
            else:  # behind everyone: the window and the waiters' times make one line
                i = taken + ahead - limit
                if i < taken:
                    until = await _nth_until(conn, s, key, i)
                else:
                    until = sorted(waiters)[i - taken][0] + per
            wait = max(until - now, 1e-6)
            await conn.execute(
                f"INSERT INTO {s}.rate_waiters VALUES ($1, $2, $3) "
                "ON CONFLICT (key, token) DO UPDATE SET at = excluded.at",
                key,
                token,
                now + wait,
            )
            out.append(wait)
    return out


async def _nth_until(conn: asyncpg.Connection, s: str, key: str, n: int) -> float:
    until = await conn.fetchval(
        f"SELECT until FROM {s}.rate_permits WHERE key = $1 ORDER BY until LIMIT 1 OFFSET $2",
        key,
        n,
    )
    return float(until)


async def take_concurrency(
    conn: asyncpg.Connection, s: str, requests: Sequence[ConcurrencyRequest]
) -> list[float]:
    out = []
    for request in requests:
        key, holder = request.key, request.holder
        async with conn.transaction():
            await conn.execute(_LOCK, "concurrency " + key)
            now = time.time()
            hold = await conn.fetchval(
                f"INSERT INTO {s}.concurrency_keys VALUES ($1, NULL, $2) ON CONFLICT (key) "
                "DO UPDATE SET touched = excluded.touched RETURNING hold",
                key,
                now,
            )
            # A lost worker's permit: its lease ran out.
            await conn.execute(
                f"DELETE FROM {s}.concurrency_holders WHERE key = $1 AND until <= $2", key, now
            )
            await conn.execute(
                f"DELETE FROM {s}.concurrency_waiters WHERE key = $1 AND at <= $2",
                key,
                now - CONCURRENCY_WAITER_GONE,
            )
            holders = {
                r[0]
                for r in await conn.fetch(
                    f"SELECT holder FROM {s}.concurrency_holders WHERE key = $1", key
                )
            }
            ahead_in_line = 0
            if request.ticket is not None:
                ahead_in_line = await _place(conn, s, key, request.ticket, now)
            if not ahead_in_line and (holder in holders or len(holders) < request.limit):
                await conn.execute(
                    f"INSERT INTO {s}.concurrency_holders VALUES ($1, $2, $3) "
                    "ON CONFLICT (key, holder) DO UPDATE SET until = excluded.until",
                    key,
                    holder,
                    now + request.lease,
                )
                await conn.execute(
                    f"DELETE FROM {s}.concurrency_waiters WHERE key = $1 AND holder = $2",
                    key,
                    holder,
                )
                if request.ticket is not None:
                    await conn.execute(
                        f"UPDATE {s}.order_lines SET head = $1, seen = $2 "
                        "WHERE key = $3 AND head <= $4",
                        request.ticket + 1,
                        now,
                        key,
                        request.ticket,
                    )
                out.append(0.0)
                continue
            if ahead_in_line:  # not its turn: one typical hold per job ahead of it
                out.append(concurrency_wait(hold, 1, ahead_in_line - 1))
                continue
            # A waiter refused again keeps its place in the line; a newcomer goes to its end.
            waiting = {
                r["holder"]: r["at"]
                for r in await conn.fetch(
                    f"SELECT holder, at FROM {s}.concurrency_waiters WHERE key = $1", key
                )
            }
            if holder in waiting:
                ahead = sorted(waiting.values()).index(waiting[holder])
            else:
                ahead = len(waiting)
            wait = concurrency_wait(hold, request.limit, ahead)
            await conn.execute(
                f"INSERT INTO {s}.concurrency_waiters VALUES ($1, $2, $3) "
                "ON CONFLICT (key, holder) DO UPDATE SET at = excluded.at",
                key,
                holder,
                now + wait,
            )
            out.append(wait)
    return out


async def _place(conn: asyncpg.Connection, s: str, key: str, ticket: int, now: float) -> int:
    """How many of the key's line are ahead of ``ticket`` (0: its turn, or a retry's)."""
    row = await conn.fetchrow(f"SELECT head, seen FROM {s}.order_lines WHERE key = $1", key)
    if row is None:
        await conn.execute(
            f"INSERT INTO {s}.order_lines VALUES ($1, 0, 1, $2) ON CONFLICT DO NOTHING", key, now
        )
        head, seen = 1, now
    else:
        head, seen = row["head"], row["seen"]
    start, seen_before = head, seen
    while (
        await conn.execute(
            f"DELETE FROM {s}.order_voided WHERE key = $1 AND ticket = $2", key, head
        )
        != "DELETE 0"
    ):
        head, seen = head + 1, now
    if ticket == head:
        seen = now
    elif ticket > head and now - seen > ORDER_SKIP_AFTER:
        head, seen = ticket, now  # the ones ahead never came: move on
    if head != start or seen != seen_before:
        await conn.execute(
            f"UPDATE {s}.order_lines SET head = $1, seen = $2 WHERE key = $3", head, seen, key
        )
    return max(ticket - head, 0)


async def take_tickets(conn: asyncpg.Connection, s: str, keys: Sequence[str]) -> list[int]:
    out = []
    now = time.time()
    async with conn.transaction():
        for key in keys:
            issued = await conn.fetchval(
                f"INSERT INTO {s}.order_lines VALUES ($1, 1, 1, $2) ON CONFLICT (key) "
                f"DO UPDATE SET issued = {s}.order_lines.issued + 1 RETURNING issued",
                key,
                now,
            )
            out.append(int(issued))
    return out


async def void_tickets(
    conn: asyncpg.Connection, s: str, tickets: Sequence[tuple[str, int]]
) -> None:
    await conn.executemany(
        f"INSERT INTO {s}.order_voided SELECT $1, $2 WHERE $2 >= "
        f"coalesce((SELECT head FROM {s}.order_lines WHERE key = $1), 1) ON CONFLICT DO NOTHING",
        list(tickets),
    )


async def renew_concurrency(
    conn: asyncpg.Connection, s: str, permits: Sequence[Permit], lease: float
) -> None:
    until = time.time() + lease
    await conn.executemany(
        f"UPDATE {s}.concurrency_holders SET until = $1 WHERE key = $2 AND holder = $3",
        [(until, p.key, p.holder) for p in permits],
    )


async def release_concurrency(
    conn: asyncpg.Connection, s: str, permits: Sequence[Permit], held_for: Sequence[float]
) -> None:
    async with conn.transaction():
        for permit, held in zip(permits, held_for, strict=True):
            await conn.execute(
                f"DELETE FROM {s}.concurrency_holders WHERE key = $1 AND holder = $2",
                permit.key,
                permit.holder,
            )
            await conn.execute(
                f"UPDATE {s}.concurrency_keys SET hold = CASE WHEN hold IS NULL THEN $1::float8 "
                "ELSE 0.8 * hold + 0.2 * $1::float8 END WHERE key = $2",
                held,
                permit.key,
            )
