"""The hot path of a ``sqlite://`` broker: enqueue, claim, settle and renew, each a function
of a connection inside one transaction (see :mod:`.database`), batch in, batch out.

Receipts: a claim adds one to the job's ``receipt`` and hands that number to the worker;
settling and renewing need it and the RUNNING state, so a worker whose lease lapsed (its
job was taken back, perhaps delivered again) changes nothing.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

from ..delivery import Delivery, Envelope
from ..records import JobStatus
from ..settlement import Outcome, Settlement
from ..throughput import count_batch, minute_of
from .codec import error_to_json
from .schema import READY, WAITING

__all__ = ["Claim", "claim", "enqueue", "next_wake", "renew", "settle"]

_QUEUED, _SCHEDULED = JobStatus.QUEUED.value, JobStatus.SCHEDULED.value
_RELEASE, _RETRY, _SNOOZE = Outcome.RELEASE, Outcome.RETRY, Outcome.SNOOZE
_DEFER, _SUCCEEDED, _DEAD = Outcome.DEFER, Outcome.SUCCEEDED, Outcome.DEAD

_COLUMNS = "id, queue, task, body, key, state, status, priority, ord, ready_at, eta, updated_at"
_INSERT = (
    f"INSERT INTO jobs ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT (id) DO NOTHING"
)
# A replay (a dead or cancelled job sent again under its id) starts its record afresh.
_REPLAY = f"""INSERT INTO jobs ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)
ON CONFLICT (id) DO UPDATE SET queue = excluded.queue, task = excluded.task,
    body = excluded.body, key = excluded.key, state = excluded.state,
    status = excluded.status, priority = excluded.priority, ord = excluded.ord,
    ready_at = excluded.ready_at, eta = excluded.eta, deferred = 0,
    lease_until = NULL, redelivered = 0, attempt = 1, snoozes = 0, result = NULL,
    error = NULL, progress = NULL, cancel_requested = 0, updated_at = excluded.updated_at,
    expires_at = NULL"""
_HELD_KEY = """SELECT k.job_id FROM idempotency_keys k JOIN jobs j ON j.id = k.job_id
WHERE k.queue = ? AND k.key = ? AND (j.state < 3 OR j.expires_at > ?)"""


def enqueue(
    conn: sqlite3.Connection, envelopes: Sequence[Envelope], now: float, known: set[str]
) -> list[str]:
    """Store a batch; each job's id (an existing job's, where its idempotency key is held).
    ``known`` are the queues this connection has put among the known queues already."""
    ids: list[str] = []
    plain: list[tuple[object, ...]] = []
    queues = set()
    for env in envelopes:
        if env.queue not in known:
            queues.add(env.queue)
        delayed = env.eta is not None and env.eta > now
        row = (
            env.id,
            env.queue,
            env.task,
            env.body,
            env.key,
            WAITING if delayed else READY,
            _SCHEDULED if delayed else _QUEUED,
            env.priority,
            env.eta if delayed else now,
            env.eta if delayed else now,
            env.eta if delayed else None,
            now,
        )
        if env.key is not None:
            held = conn.execute(_HELD_KEY, (env.queue, env.key, now)).fetchone()
            if held is not None:
                ids.append(held[0])
                continue
            conn.execute(
                "INSERT OR REPLACE INTO idempotency_keys VALUES (?, ?, ?)",
                (env.queue, env.key, env.id),
            )
            # Stored at once, not with the batch: a later job of the batch with the same key
            # must find this one.
            conn.execute(_REPLAY if env.replay else _INSERT, row)
        elif env.replay:
            conn.execute(_REPLAY, row)
        else:
            plain.append(row)
        ids.append(env.id)
    if len(plain) == 1:
        conn.execute(_INSERT, plain[0])
    elif plain:
        conn.executemany(_INSERT, plain)
    if queues:
        conn.executemany("INSERT OR IGNORE INTO queues VALUES (?)", [(q,) for q in queues])
    return ids


def next_wake(conn: sqlite3.Connection, queues: Sequence[str]) -> tuple[bool, float | None]:
    """Whether any of ``queues`` has a job ready, and the earliest time one comes due (a
    delayed job's eta, a running job's lease end): a read, so an idle worker's look takes no
    write lock."""
    ready, wake_at = False, None
    for queue in queues:
        if not ready:
            ready = (
                conn.execute(
                    "SELECT 1 FROM jobs WHERE state = 0 AND queue = ? LIMIT 1", (queue,)
                ).fetchone()
                is not None
            )
        for (at,) in conn.execute(
            "SELECT min(eta) FROM jobs WHERE state = 1 AND queue = ? UNION ALL "
            "SELECT min(lease_until) FROM jobs WHERE state = 2 AND queue = ?",
            (queue, queue),
        ):
            if at is not None and (wake_at is None or at < wake_at):
                wake_at = at
    return ready, wake_at


@dataclass(slots=True)
class Claim:
    deliveries: list[Delivery]
    cancelled: list[str]
    """Jobs whose cancellation was asked while a worker since lost ran them: finished as
    CANCELLED instead of delivered."""


_PROMOTE = """UPDATE jobs SET state = 0, status = 'queued', ord = eta, ready_at = eta, eta = NULL,
    deferred = 0 WHERE state = 1 AND queue = ? AND eta <= ?"""
# A lost worker's job goes back to the front of its priority (its ord is kept).
_RECLAIM = """UPDATE jobs SET state = 0, status = 'queued', redelivered = 1, ready_at = lease_until,
    lease_until = NULL WHERE state = 2 AND queue = ? AND lease_until <= ?"""
_TAKE = """UPDATE jobs SET state = 2, status = 'running', receipt = receipt + 1, lease_until = ?,
    updated_at = ?
WHERE seq IN (SELECT seq FROM jobs WHERE state = 0 AND queue = ?
              ORDER BY priority DESC, ord, seq LIMIT ?)
RETURNING id, body, receipt, redelivered, priority, cancel_requested, key, ord, seq"""


def claim(
    conn: sqlite3.Connection,
    queues: Sequence[str],
    limit: int,
    now: float,
    visibility_timeout: float,
    result_ttl: float,
) -> Claim:
    """Move due jobs and lapsed leases to ready, then take up to ``limit`` ready jobs, the
    queues in the order given."""
    out = Claim([], [])
    lease_until = now + visibility_timeout
    for queue in queues:
        conn.execute(_PROMOTE, (queue, now))
        conn.execute(_RECLAIM, (queue, now))
        if len(out.deliveries) >= limit:
            continue
        rows = conn.execute(
            _TAKE, (lease_until, now, queue, limit - len(out.deliveries))
        ).fetchall()
        # RETURNING gives rows in the order they were changed, not the subquery's.
        rows.sort(key=lambda r: (-r[4], r[7], r[8]))
        for job_id, body, receipt, redelivered, priority, cancel_requested, key, _, _ in rows:
            if cancel_requested:
                _finish(conn, job_id, queue, key, JobStatus.CANCELLED, now, now + result_ttl)
                out.cancelled.append(job_id)
                continue
            out.deliveries.append(
                Delivery(job_id, queue, body, receipt, bool(redelivered), priority)
            )
    return out


def _finish(
    conn: sqlite3.Connection,
    job_id: str,
    queue: str,
    key: str | None,
    status: JobStatus,
    now: float,
    expires_at: float,
) -> None:
    conn.execute(
        "UPDATE jobs SET state = 3, status = ?, eta = NULL, lease_until = NULL, deferred = 0, "
        "updated_at = ?, expires_at = ? WHERE id = ?",
        (status.value, now, expires_at, job_id),
    )
    free_key(conn, queue, key, job_id)


def free_key(conn: sqlite3.Connection, queue: str, key: str | None, job_id: str) -> None:
    """A job that ended other than in success frees its idempotency key, so the same work
    can be asked for again."""
    if key is not None:
        conn.execute(
            "DELETE FROM idempotency_keys WHERE queue = ? AND key = ? AND job_id = ?",
            (queue, key, job_id),
        )


_SUCCEED = """UPDATE jobs SET state = 3, status = 'succeeded', result = ?, error = NULL,
    lease_until = NULL, updated_at = ?, expires_at = ? WHERE id = ? AND receipt = ? AND state = 2"""
_HELD = "WHERE id = ? AND receipt = ? AND state = 2"
_HOLDING = _HELD + " RETURNING key, task"


def settle(
    conn: sqlite3.Connection, settlements: Sequence[Settlement], now: float, result_ttl: float
) -> list[str]:
    """Carry out a batch of settlements; the ids of the jobs that finished."""
    finished: list[str] = []
    succeeded: list[tuple[object, ...]] = []
    for s in settlements:
        d, outcome = s.delivery, s.outcome
        if outcome is _SUCCEEDED:
            ttl = result_ttl if s.result_ttl is None else s.result_ttl
            succeeded.append((s.result, now, now + ttl, d.id, d.receipt))
            finished.append(d.id)
        elif outcome is _RELEASE:
            conn.execute(
                "UPDATE jobs SET state = 0, status = 'queued', lease_until = NULL, ready_at = ?, "
                f"updated_at = ? {_HELD}",
                (now, now, d.id, d.receipt),
            )
        elif outcome is _RETRY or outcome is _SNOOZE or outcome is _DEFER:
            _again(conn, s, now)
        else:
            ttl = result_ttl if s.result_ttl is None else s.result_ttl
            status = JobStatus.DEAD if outcome is _DEAD else JobStatus.CANCELLED
            row = conn.execute(
                "UPDATE jobs SET state = 3, status = ?, error = coalesce(?, error), "
                "lease_until = NULL, updated_at = ?, expires_at = ? " + _HOLDING,
                (
                    status.value,
                    error_to_json(s.error) if outcome is _DEAD else None,
                    now,
                    now + ttl,
                    d.id,
                    d.receipt,
                ),
            ).fetchall()
            if not row:
                continue  # a stale delivery
            key, task = row[0]
            free_key(conn, d.queue, key, d.id)
            if outcome is _DEAD:
                conn.execute(
                    "INSERT INTO dead_letters (queue, job_id, task, body, error, died_at) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (d.queue, d.id, s.task or task, d.body, error_to_json(s.error) or b"{}", now),
                )
            finished.append(d.id)
    if succeeded:
        conn.executemany(_SUCCEED, succeeded)
    minute = minute_of(now)
    conn.executemany(
        "INSERT INTO minute_counts VALUES (?, ?, ?, ?) ON CONFLICT (queue, minute) DO UPDATE "
        "SET succeeded = succeeded + excluded.succeeded, failed = failed + excluded.failed",
        [(queue, minute, n[0], n[1]) for queue, n in count_batch(settlements).items()],
    )
    return finished


def _again(conn: sqlite3.Connection, s: Settlement, now: float) -> None:
    """A retry, snooze or deferral: the job goes back, due at ``s.eta``."""
    d, outcome = s.delivery, s.outcome
    later = s.eta is not None and s.eta > now
    state = WAITING if later else READY
    eta = s.eta if later else None
    if outcome is _DEFER:  # unchanged: same body, attempt and snoozes; QUEUED while it waits
        conn.execute(
            "UPDATE jobs SET state = ?, status = 'queued', eta = ?, deferred = ?, redelivered = 0,"
            f" lease_until = NULL, ord = ?, ready_at = ?, updated_at = ? {_HELD}",
            (state, eta, int(later), now, now, now, d.id, d.receipt),
        )
        return
    if outcome is _RETRY:
        status = JobStatus.FAILED.value if later else _QUEUED
        conn.execute(
            "UPDATE jobs SET state = ?, status = ?, eta = ?, body = ?, attempt = ?, error = ?, "
            "redelivered = 0, lease_until = NULL, ord = ?, ready_at = ?, updated_at = ? " + _HELD,
            (
                state,
                status,
                eta,
                s.retry_body,
                s.attempt + 1,
                error_to_json(s.error),
                now,
                now,
                now,
                d.id,
                d.receipt,
            ),
        )
        return
    conn.execute(
        "UPDATE jobs SET state = ?, status = ?, eta = ?, body = ?, snoozes = snoozes + 1, "
        "redelivered = 0, lease_until = NULL, ord = ?, ready_at = ?, updated_at = ? " + _HELD,
        (
            state,
            _SCHEDULED if later else _QUEUED,
            eta,
            s.retry_body,
            now,
            now,
            now,
            d.id,
            d.receipt,
        ),
    )


def renew(conn: sqlite3.Connection, deliveries: Sequence[Delivery], lease_until: float) -> None:
    conn.executemany(
        "UPDATE jobs SET lease_until = ? WHERE id = ? AND receipt = ? AND state = 2",
        [(lease_until, d.id, d.receipt) for d in deliveries],
    )
