"""The rate and concurrency limits of a ``sqlite://`` broker, with the semantics of the
memory and Redis ones (see :mod:`asyncq.store`): each request one step inside a write
transaction, which is what makes it atomic across every process on the file."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence

from ..memory_limits import concurrency_wait
from ..records import ConcurrencyRequest, Permit, RateRequest
from ..store import ORDER_SKIP_AFTER

__all__ = [
    "release_concurrency",
    "renew_concurrency",
    "sweep",
    "take_concurrency",
    "take_rate",
    "take_tickets",
    "void_tickets",
]

_GONE = 2.0  # seconds after its time: a concurrency waiter that has not come back never will
_QUIET = 30.0  # seconds without a request after which a concurrency key's state goes


def _grace(per: float) -> float:
    """How long after its time a rate waiter that has not come back is given up."""
    return max(1.0, min(per, 10.0))


def take_rate(conn: sqlite3.Connection, requests: Sequence[RateRequest]) -> list[float]:
    out = []
    for request in requests:
        now = time.time()
        key, limit, per, token = request.key, request.limit, request.per, request.token
        # A permit's row says when it leaves the window; one that has is gone.
        conn.execute("DELETE FROM rate_permits WHERE key = ? AND until <= ?", (key, now))
        conn.execute("DELETE FROM rate_waiters WHERE key = ? AND at <= ?", (key, now - _grace(per)))
        (taken,) = conn.execute(
            "SELECT count(*) FROM rate_permits WHERE key = ?", (key,)
        ).fetchone()
        waiters = [
            (at, t)
            for at, t in conn.execute("SELECT at, token FROM rate_waiters WHERE key = ?", (key,))
        ]
        ahead = len(waiters)
        returning = any(t == token for _, t in waiters)
        # A free permit goes to a waiter coming back, or to a newcomer if it leaves enough
        # for every waiter still to come: newcomers do not jump the line.
        if (returning and taken < limit) or taken + ahead < limit:
            conn.execute("DELETE FROM rate_waiters WHERE key = ? AND token = ?", (key, token))
            conn.execute("INSERT INTO rate_permits VALUES (?, ?)", (key, now + per))
            out.append(0.0)
            continue
        if returning:  # permits come free later than foretold: it keeps its place
            until = _nth_until(conn, key, taken - limit)
        else:  # behind everyone: the window and the waiters' times make one line
            i = taken + ahead - limit
            until = _nth_until(conn, key, i) if i < taken else sorted(waiters)[i - taken][0] + per
        wait = max(until - now, 1e-6)
        conn.execute(
            "INSERT OR REPLACE INTO rate_waiters VALUES (?, ?, ?)", (key, token, now + wait)
        )
        out.append(wait)
    return out


def _nth_until(conn: sqlite3.Connection, key: str, n: int) -> float:
    (until,) = conn.execute(
        "SELECT until FROM rate_permits WHERE key = ? ORDER BY until LIMIT 1 OFFSET ?", (key, n)
    ).fetchone()
    return float(until)


def take_concurrency(
    conn: sqlite3.Connection, requests: Sequence[ConcurrencyRequest]
) -> list[float]:
    out = []
    for request in requests:
        now = time.time()
        key, holder = request.key, request.holder
        row = conn.execute("SELECT hold FROM concurrency_keys WHERE key = ?", (key,)).fetchone()
        hold = None if row is None else row[0]
        conn.execute(
            "INSERT INTO concurrency_keys VALUES (?, NULL, ?) "
            "ON CONFLICT (key) DO UPDATE SET touched = excluded.touched",
            (key, now),
        )
        # A lost worker's permit: its lease ran out.
        conn.execute("DELETE FROM concurrency_holders WHERE key = ? AND until <= ?", (key, now))
        conn.execute(
            "DELETE FROM concurrency_waiters WHERE key = ? AND at <= ?", (key, now - _GONE)
        )
        holders = {
            h
            for (h,) in conn.execute("SELECT holder FROM concurrency_holders WHERE key = ?", (key,))
        }
        ahead_in_line = 0
        if request.ticket is not None:
            ahead_in_line = _place(conn, key, request.ticket, now)
        if not ahead_in_line and (holder in holders or len(holders) < request.limit):
            conn.execute(
                "INSERT OR REPLACE INTO concurrency_holders VALUES (?, ?, ?)",
                (key, holder, now + request.lease),
            )
            conn.execute(
                "DELETE FROM concurrency_waiters WHERE key = ? AND holder = ?", (key, holder)
            )
            if request.ticket is not None:
                conn.execute(
                    "UPDATE order_lines SET head = ?, seen = ? WHERE key = ? AND head <= ?",
                    (request.ticket + 1, now, key, request.ticket),
                )
            out.append(0.0)
            continue
        if ahead_in_line:  # not its turn: one typical hold per job ahead of it
            out.append(concurrency_wait(hold, 1, ahead_in_line - 1))
            continue
        # A waiter refused again keeps its place in the line; a newcomer goes to its end.
        waiting = dict(
            conn.execute("SELECT holder, at FROM concurrency_waiters WHERE key = ?", (key,))
        )
        if holder in waiting:
            ahead = sorted(waiting.values()).index(waiting[holder])
        else:
            ahead = len(waiting)
        wait = concurrency_wait(hold, request.limit, ahead)
        conn.execute(
            "INSERT OR REPLACE INTO concurrency_waiters VALUES (?, ?, ?)", (key, holder, now + wait)
        )
        out.append(wait)
    return out


def _place(conn: sqlite3.Connection, key: str, ticket: int, now: float) -> int:
    """How many of the key's line are ahead of ``ticket`` (0: its turn, or a retry's)."""
    row = conn.execute("SELECT head, seen FROM order_lines WHERE key = ?", (key,)).fetchone()
    if row is None:
        conn.execute("INSERT INTO order_lines VALUES (?, 0, 1, ?)", (key, now))
        head, seen = 1, now
    else:
        head, seen = row
    start, seen_before = head, seen
    while conn.execute(
        "DELETE FROM order_voided WHERE key = ? AND ticket = ?", (key, head)
    ).rowcount:
        head, seen = head + 1, now
    if ticket == head:
        seen = now
    elif ticket > head and now - seen > ORDER_SKIP_AFTER:
        head, seen = ticket, now  # the ones ahead never came: move on
    if head != start or seen != seen_before:
        conn.execute("UPDATE order_lines SET head = ?, seen = ? WHERE key = ?", (head, seen, key))
    return max(ticket - head, 0)


def take_tickets(conn: sqlite3.Connection, keys: Sequence[str]) -> list[int]:
    out = []
    now = time.time()
    for key in keys:
        (issued,) = conn.execute(
            "INSERT INTO order_lines VALUES (?, 1, 1, ?) "
            "ON CONFLICT (key) DO UPDATE SET issued = issued + 1 RETURNING issued",
            (key, now),
        ).fetchall()[0]
        out.append(int(issued))
    return out


def void_tickets(conn: sqlite3.Connection, tickets: Sequence[tuple[str, int]]) -> None:
    conn.executemany(
        "INSERT OR IGNORE INTO order_voided SELECT ?1, ?2 WHERE ?2 >= "
        "coalesce((SELECT head FROM order_lines WHERE key = ?1), 1)",
        list(tickets),
    )


def renew_concurrency(conn: sqlite3.Connection, permits: Sequence[Permit], lease: float) -> None:
    until = time.time() + lease
    conn.executemany(
        "UPDATE concurrency_holders SET until = ? WHERE key = ? AND holder = ?",
        [(until, p.key, p.holder) for p in permits],
    )


def release_concurrency(
    conn: sqlite3.Connection, permits: Sequence[Permit], held_for: Sequence[float]
) -> None:
    for permit, held in zip(permits, held_for, strict=True):
        conn.execute(
            "DELETE FROM concurrency_holders WHERE key = ? AND holder = ?",
            (permit.key, permit.holder),
        )
        conn.execute(
            "UPDATE concurrency_keys SET hold = CASE WHEN hold IS NULL THEN ?1 "
            "ELSE 0.8 * hold + 0.2 * ?1 END WHERE key = ?2",
            (held, permit.key),
        )


def sweep(conn: sqlite3.Connection, now: float) -> None:
    """Drop the state of keys gone quiet, so millions of tenants do not fill the file."""
    conn.execute("DELETE FROM rate_permits WHERE until <= ?", (now,))
    conn.execute("DELETE FROM rate_waiters WHERE at <= ?", (now - 10.0 - _GONE,))
    conn.execute("DELETE FROM concurrency_holders WHERE until <= ?", (now,))
    conn.execute("DELETE FROM concurrency_waiters WHERE at <= ?", (now - _GONE,))
    conn.execute(
        "DELETE FROM concurrency_keys WHERE touched < ?1 AND NOT EXISTS "
        "(SELECT 1 FROM concurrency_holders h WHERE h.key = concurrency_keys.key)",
        (now - _QUIET,),
    )
    # A line whose every ticket has started, quiet for a while: a new ticket starts afresh.
    conn.execute(
        "DELETE FROM order_lines WHERE head > issued AND seen < ?", (now - ORDER_SKIP_AFTER,)
    )
    conn.execute(
        "DELETE FROM order_voided WHERE NOT EXISTS "
        "(SELECT 1 FROM order_lines l WHERE l.key = order_voided.key)"
    )
