"""What operators ask of a ``sqlite://`` broker: queue depths, listings, dead letters,
purges and retention; each a function of a connection inside one transaction."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from ..errors import ErrorInfo
from ..records import DeadLetter, JobListing, JobStatus, QueueStats, TrimmedDeadLetters
from .codec import error_from_json
from .delivery import free_key

__all__ = [
    "dead_letters",
    "list_jobs",
    "purge_dead",
    "purge_queue",
    "queue_stats",
    "remove_queue",
    "trim_dead",
]

_PRIORITIES = range(10)


def queue_stats(
    conn: sqlite3.Connection, queues: Sequence[str] | None, now: float
) -> list[QueueStats]:
    if queues is None:
        # The known queues, and any with live jobs that another process's enqueues put in
        # a queue removed since (each a walk of a partial index's leading column).
        queues = [
            name
            for (name,) in conn.execute(
                "SELECT name FROM queues UNION SELECT DISTINCT queue FROM jobs WHERE state = 0 "
                "UNION SELECT DISTINCT queue FROM jobs WHERE state = 1 "
                "UNION SELECT DISTINCT queue FROM jobs WHERE state = 2 ORDER BY 1"
            )
        ]
    out = []
    for queue in queues:
        # Delayed jobs whose time has come are pending, moved to ready or not yet.
        ready, waiting, deferred, due, due_since, running = conn.execute(
            "SELECT (SELECT count(*) FROM jobs WHERE state = 0 AND queue = ?1),"
            " (SELECT count(*) FROM jobs WHERE state = 1 AND queue = ?1),"
            " (SELECT count(*) FROM jobs WHERE state = 1 AND queue = ?1 AND deferred = 1),"
            " (SELECT count(*) FROM jobs WHERE state = 1 AND queue = ?1 AND eta <= ?2"
            "  AND deferred = 0),"
            " (SELECT min(eta) FROM jobs WHERE state = 1 AND queue = ?1 AND eta <= ?2),"
            " (SELECT count(*) FROM jobs WHERE state = 2 AND queue = ?1)",
            (queue, now),
        ).fetchone()
        (dead,) = conn.execute(
            "SELECT count(*) FROM dead_letters WHERE queue = ?", (queue,)
        ).fetchone()
        # The longest waiting of each priority is the front of its part of the index: one
        # seek each, where min() over the queue would read every ready job.
        oldest = now if due_since is None else due_since
        for priority in _PRIORITIES:
            row = conn.execute(
                "SELECT ready_at FROM jobs WHERE state = 0 AND queue = ? AND priority = ? "
                "ORDER BY priority DESC, ord, seq LIMIT 1",
                (queue, priority),
            ).fetchone()
            if row is not None:
                oldest = min(oldest, row[0])
        out.append(
            QueueStats(
                queue=queue,
                pending=ready + deferred + due,
                scheduled=waiting - deferred - due,
                running=running,
                dead=dead,
                oldest_pending_age=max(now - oldest, 0.0),
            )
        )
    return out


def _letter(row: tuple[int, str, str, str, bytes, bytes, float]) -> DeadLetter:
    seq, queue, job_id, task, body, error, died_at = row
    return DeadLetter(
        id=job_id,
        queue=queue,
        body=body,
        error=error_from_json(error) or ErrorInfo("Unknown", ""),
        died_at=died_at,
        task=task,
        cursor=f"{seq:020d}",
    )


def dead_letters(
    conn: sqlite3.Connection, queue: str, limit: int, after: str | None
) -> list[DeadLetter]:
    rows = conn.execute(
        "SELECT seq, queue, job_id, task, body, error, died_at FROM dead_letters "
        "WHERE queue = ? AND seq > ? ORDER BY seq LIMIT ?",
        (queue, int(after) if after else 0, limit),
    ).fetchall()
    return [_letter(row) for row in rows]


def run_now(conn: sqlite3.Connection, queue: str, job_id: str, now: float) -> bool:
    """A waiting job ready now, first of those that became ready at this moment."""
    return (
        conn.execute(
            "UPDATE jobs SET state = 0, status = 'queued', ord = ?, ready_at = ?, eta = NULL, "
            "deferred = 0 WHERE queue = ? AND id = ? AND state = 1",
            (now, now, queue, job_id),
        ).rowcount
        == 1
    )


def dead_letter(conn: sqlite3.Connection, queue: str, job_id: str) -> DeadLetter | None:
    row = conn.execute(
        "SELECT seq, queue, job_id, task, body, error, died_at FROM dead_letters "
        "WHERE queue = ? AND job_id = ? ORDER BY seq DESC LIMIT 1",
        (queue, job_id),
    ).fetchone()
    return None if row is None else _letter(row)


def purge_dead(conn: sqlite3.Connection, queue: str, ids: Sequence[str] | None) -> int:
    if ids is None:
        return conn.execute("DELETE FROM dead_letters WHERE queue = ?", (queue,)).rowcount
    deleted = 0
    for job_id in ids:  # only the oldest entry of each: see Backend.purge_dead
        deleted += conn.execute(
            "DELETE FROM dead_letters WHERE seq = (SELECT seq FROM dead_letters "
            "WHERE queue = ? AND job_id = ? ORDER BY seq LIMIT 1)",
            (queue, job_id),
        ).rowcount
    return deleted


def trim_dead(
    conn: sqlite3.Connection,
    queues: Sequence[str],
    cutoff: float | None,
    dead_max: int | None,
) -> list[TrimmedDeadLetters]:
    trims = []
    for queue in queues:
        expired = beyond = 0
        if cutoff is not None:
            expired = conn.execute(
                "DELETE FROM dead_letters WHERE seq IN (SELECT seq FROM dead_letters "
                "WHERE queue = ? AND died_at < ?)",
                (queue, cutoff),
            ).rowcount
        if dead_max is not None:
            (count,) = conn.execute(
                "SELECT count(*) FROM dead_letters WHERE queue = ?", (queue,)
            ).fetchone()
            if count > dead_max:
                beyond = conn.execute(
                    "DELETE FROM dead_letters WHERE seq IN (SELECT seq FROM dead_letters "
                    "WHERE queue = ? ORDER BY seq LIMIT ?)",
                    (queue, count - dead_max),
                ).rowcount
        if expired or beyond:
            trims.append(TrimmedDeadLetters(queue, expired, beyond))
    return trims


def purge_queue(
    conn: sqlite3.Connection, queue: str, limit: int, now: float, result_ttl: float
) -> list[str]:
    """Cancel up to ``limit`` waiting jobs (ready or waiting for an eta); their ids."""
    rows = conn.execute(
        "UPDATE jobs SET state = 3, status = 'cancelled', eta = NULL, deferred = 0, "
        "updated_at = ?, expires_at = ? WHERE seq IN (SELECT seq FROM jobs "
        "WHERE state = 0 AND queue = ?3 UNION ALL SELECT seq FROM jobs WHERE state = 1 "
        "AND queue = ?3 LIMIT ?4) RETURNING id, key",
        (now, now + result_ttl, queue, limit),
    ).fetchall()
    for job_id, key in rows:
        free_key(conn, queue, key, job_id)
    return [job_id for job_id, _ in rows]


def remove_queue(conn: sqlite3.Connection, queue: str) -> None:
    conn.execute("DELETE FROM queues WHERE name = ?", (queue,))
    conn.execute("DELETE FROM dead_letters WHERE queue = ?", (queue,))
    conn.execute("DELETE FROM minute_counts WHERE queue = ?", (queue,))


_LISTINGS = {
    # Ready ones first, in the order they are served, then those deferred by a limit.
    JobStatus.QUEUED: "SELECT * FROM (SELECT id, status, task, attempt, eta FROM jobs "
    "WHERE state = 0 AND queue = ?1 ORDER BY priority DESC, ord, seq) UNION ALL "
    "SELECT * FROM (SELECT id, status, task, attempt, eta FROM jobs WHERE state = 1 "
    "AND queue = ?1 AND deferred = 1 ORDER BY eta, seq)",
    JobStatus.SCHEDULED: "SELECT id, status, task, attempt, eta FROM jobs WHERE state = 1 AND "
    "queue = ?1 AND deferred = 0 ORDER BY eta, seq",
    JobStatus.RUNNING: "SELECT id, status, task, attempt, eta FROM jobs WHERE state = 2 AND "
    "queue = ?1 ORDER BY updated_at, seq",
}


def list_jobs(
    conn: sqlite3.Connection, queue: str, status: JobStatus, limit: int, after: str | None
) -> list[JobListing]:
    if status is JobStatus.DEAD:
        return [
            JobListing(d.id, queue, JobStatus.DEAD, d.task, cursor=d.cursor)
            for d in dead_letters(conn, queue, limit, after)
        ]
    query = _LISTINGS.get(status)
    if query is None:
        raise ValueError(f"jobs cannot be listed by status {status.value!r}")
    # The cursor is the job's place in this listing; a page goes on after it.
    start = int(after) + 1 if after is not None else 0
    rows = conn.execute(
        f"SELECT * FROM ({query}) LIMIT ?2 OFFSET ?3", (queue, limit, start)
    ).fetchall()
    return [
        JobListing(job_id, queue, JobStatus(state), task, attempt, eta, str(place))
        for place, (job_id, state, task, attempt, eta) in enumerate(rows, start)
    ]
