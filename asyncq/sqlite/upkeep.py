"""What keeps a ``sqlite://`` file from growing under a steady load: finished jobs' rows
deleted once their records expire (in batches, each its own short transaction, so a
backlog never holds the write lock for long), and the other tables' stale rows. SQLite
reuses the pages freed, so the file stops growing once rows go as fast as they come.
"""

from __future__ import annotations

import sqlite3

from ..throughput import KEPT
from . import limits

__all__ = ["EXPIRE_BATCH", "expire_jobs", "sweep"]

EXPIRE_BATCH = 2000
"""Finished rows deleted per transaction."""
CANCELLATION_RETENTION = 600.0
"""Seconds a cancellation request is kept for the workers to read (they read it within
``FAST_LOOK``..``SLOW_LOOK`` of its commit)."""


def expire_jobs(conn: sqlite3.Connection, now: float) -> int:
    """Delete up to ``EXPIRE_BATCH`` finished jobs whose records expired, with the
    idempotency keys they held; how many."""
    rows = conn.execute(
        "DELETE FROM jobs WHERE seq IN (SELECT seq FROM jobs WHERE state = 3 AND expires_at <= ? "
        "ORDER BY expires_at LIMIT ?) RETURNING id, queue, key",
        (now, EXPIRE_BATCH),
    ).fetchall()
    keyed = [(queue, key, job_id) for job_id, queue, key in rows if key is not None]
    if keyed:
        conn.executemany(
            "DELETE FROM idempotency_keys WHERE queue = ? AND key = ? AND job_id = ?", keyed
        )
    return len(rows)


def sweep(conn: sqlite3.Connection, now: float) -> None:
    conn.execute("DELETE FROM cancellations WHERE at <= ?", (now - CANCELLATION_RETENTION,))
    conn.execute("DELETE FROM slot_claims WHERE until <= ?", (now,))
    conn.execute("DELETE FROM minute_counts WHERE minute <= ?", (now - KEPT,))
    limits.sweep(conn, now)
