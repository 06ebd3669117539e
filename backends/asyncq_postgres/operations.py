"""What operators ask of a ``postgresql://`` broker: queue depths, listings, dead letters,
purges and retention, each on a connection of the pool."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from asyncq.errors import ErrorInfo
from asyncq.record_json import error_from_json
from asyncq.records import DeadLetter, JobListing, JobStatus, QueueStats, TrimmedDeadLetters

__all__ = [
    "dead_letters",
    "list_jobs",
    "purge_dead",
    "purge_queue",
    "queue_stats",
    "remove_queue",
    "trim_dead",
]


def _s(schema: str) -> str:
    return f'"{schema}"'


async def queue_stats(
    conn: asyncpg.Connection, schema: str, queues: Sequence[str] | None, now: float
) -> list[QueueStats]:
    s = _s(schema)
    if queues is None:
        # The known queues, and any with live jobs enqueued into a queue removed since.
        queues = [
            r[0]
            for r in await conn.fetch(
                f"SELECT name FROM {s}.queues UNION SELECT DISTINCT queue FROM {s}.jobs "
                f"WHERE state < 3 ORDER BY 1"
            )
        ]
    out = []
    for queue in queues:
        # Delayed jobs whose time has come are pending, moved to ready or not yet.
        r = await conn.fetchrow(
            f"""SELECT
  (SELECT count(*) FROM {s}.jobs WHERE state = 0 AND queue = $1) AS ready,
  (SELECT count(*) FROM {s}.jobs WHERE state = 1 AND queue = $1) AS waiting,
  (SELECT count(*) FROM {s}.jobs WHERE state = 1 AND queue = $1 AND deferred) AS deferred,
  (SELECT count(*) FROM {s}.jobs WHERE state = 1 AND queue = $1 AND eta <= $2
     AND NOT deferred) AS due,
  (SELECT min(eta) FROM {s}.jobs WHERE state = 1 AND queue = $1 AND eta <= $2) AS due_since,
  (SELECT count(*) FROM {s}.jobs WHERE state = 2 AND queue = $1) AS running,
  (SELECT min(ready_at) FROM {s}.jobs WHERE state = 0 AND queue = $1) AS oldest_ready,
  (SELECT count(*) FROM {s}.dead_letters WHERE queue = $1) AS dead""",
            queue,
            now,
        )
        oldest = now
        for candidate in (r["due_since"], r["oldest_ready"]):
            if candidate is not None:
                oldest = min(oldest, candidate)
        out.append(
            QueueStats(
                queue=queue,
                pending=r["ready"] + r["deferred"] + r["due"],
                scheduled=r["waiting"] - r["deferred"] - r["due"],
                running=r["running"],
                dead=r["dead"],
                oldest_pending_age=max(now - oldest, 0.0),
            )
        )
    return out


def _letter(r: asyncpg.Record) -> DeadLetter:
    return DeadLetter(
        id=r["job_id"],
        queue=r["queue"],
        body=r["body"],
        error=error_from_json(r["error"]) if r["error"] else ErrorInfo("Unknown", ""),
        died_at=r["died_at"],
        task=r["task"],
        cursor=f"{r['seq']:020d}",
    )


async def dead_letters(
    conn: asyncpg.Connection, schema: str, queue: str, limit: int, after: str | None
) -> list[DeadLetter]:
    rows = await conn.fetch(
        f"SELECT seq, queue, job_id, task, body, error, died_at FROM {_s(schema)}.dead_letters "
        "WHERE queue = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        queue,
        int(after) if after else 0,
        limit,
    )
    return [_letter(r) for r in rows]


async def run_now(
    conn: asyncpg.Connection, schema: str, channel: str, queue: str, job_id: str, now: float
) -> bool:
    """A waiting job ready now, and a NOTIFY that wakes an idle worker (on commit)."""
    async with conn.transaction():
        moved = await conn.fetchval(
            f"UPDATE {_s(schema)}.jobs SET state = 0, status = 'queued', ord = $3, "
            "ready_at = $3, eta = NULL, deferred = false WHERE queue = $1 AND id = $2 "
            "AND state = 1 RETURNING 1",
            queue,
            job_id,
            now,
        )
        if moved:
            await conn.execute("SELECT pg_notify($1, 'q:' || $2)", channel, queue)
    return bool(moved)


async def dead_letter(
    conn: asyncpg.Connection, schema: str, queue: str, job_id: str
) -> DeadLetter | None:
    r = await conn.fetchrow(
        f"SELECT seq, queue, job_id, task, body, error, died_at FROM {_s(schema)}.dead_letters "
        "WHERE queue = $1 AND job_id = $2 ORDER BY seq DESC LIMIT 1",
        queue,
        job_id,
    )
    return None if r is None else _letter(r)


def _count(status: str) -> int:
    return int(status.rsplit(" ", 1)[-1])


async def purge_dead(
    conn: asyncpg.Connection, schema: str, queue: str, ids: Sequence[str] | None
) -> int:
    s = _s(schema)
    if ids is None:
        return _count(await conn.execute(f"DELETE FROM {s}.dead_letters WHERE queue = $1", queue))
    # Only the oldest entry of each: see Backend.purge_dead.
    return _count(
        await conn.execute(
            f"""DELETE FROM {s}.dead_letters WHERE seq IN (
                SELECT min(seq) FROM {s}.dead_letters WHERE queue = $1 AND job_id = ANY($2::text[])
                GROUP BY job_id)""",
            queue,
            list(ids),
        )
    )


async def trim_dead(
    conn: asyncpg.Connection,
    schema: str,
    queues: Sequence[str],
    cutoff: float | None,
    dead_max: int | None,
) -> list[TrimmedDeadLetters]:
    s = _s(schema)
    trims = []
    for queue in queues:
        expired = beyond = 0
        if cutoff is not None:
            expired = _count(
                await conn.execute(
                    f"DELETE FROM {s}.dead_letters WHERE queue = $1 AND died_at < $2", queue, cutoff
                )
            )
        if dead_max is not None:
            count = await conn.fetchval(
                f"SELECT count(*) FROM {s}.dead_letters WHERE queue = $1", queue
            )
            if count > dead_max:
                beyond = _count(
                    await conn.execute(
                        f"DELETE FROM {s}.dead_letters WHERE seq IN (SELECT seq FROM "
                        f"{s}.dead_letters WHERE queue = $1 ORDER BY seq LIMIT $2)",
                        queue,
                        count - dead_max,
                    )
                )
        if expired or beyond:
            trims.append(TrimmedDeadLetters(queue, expired, beyond))
    return trims


async def purge_queue(
    conn: asyncpg.Connection, schema: str, queue: str, limit: int, now: float, result_ttl: float
) -> list[str]:
    """Cancel up to ``limit`` waiting jobs (ready or waiting for an eta); their ids."""
    s = _s(schema)
    rows = await conn.fetch(
        f"""UPDATE {s}.jobs SET state = 3, status = 'cancelled', eta = NULL, deferred = false,
            held_key = NULL, updated_at = $1, expires_at = $2
        WHERE seq IN (SELECT seq FROM {s}.jobs WHERE state IN (0, 1) AND queue = $3
                      LIMIT $4 FOR UPDATE SKIP LOCKED)
        RETURNING id""",
        now,
        now + result_ttl,
        queue,
        limit,
    )
    return [r["id"] for r in rows]


async def remove_queue(conn: asyncpg.Connection, schema: str, queue: str) -> None:
    s = _s(schema)
    async with conn.transaction():
        await conn.execute(f"DELETE FROM {s}.queues WHERE name = $1", queue)
        await conn.execute(f"DELETE FROM {s}.dead_letters WHERE queue = $1", queue)
        await conn.execute(f"DELETE FROM {s}.minute_counts WHERE queue = $1", queue)


_ORDER = "ORDER BY priority DESC, ord, seq"


def _listing(s: str, status: JobStatus) -> str | None:
    columns = "id, status, task, attempt, eta"
    if status is JobStatus.QUEUED:
        # Ready ones first, in the order they are served, then those deferred by a limit.
        return (
            f"(SELECT {columns}, 0 AS part, priority, ord, seq FROM {s}.jobs "
            f"WHERE state = 0 AND queue = $1) UNION ALL (SELECT {columns}, 1, 0, eta, seq "
            f"FROM {s}.jobs WHERE state = 1 AND queue = $1 AND deferred) "
            f"ORDER BY part, priority DESC, ord, seq"
        )
    if status is JobStatus.SCHEDULED:
        return (
            f"SELECT {columns} FROM {s}.jobs WHERE state = 1 AND queue = $1 AND NOT deferred "
            "ORDER BY eta, seq"
        )
    if status is JobStatus.RUNNING:
        return (
            f"SELECT {columns} FROM {s}.jobs WHERE state = 2 AND queue = $1 "
            "ORDER BY updated_at, seq"
        )
    return None


async def list_jobs(
    conn: asyncpg.Connection,
    schema: str,
    queue: str,
    status: JobStatus,
    limit: int,
    after: str | None,
) -> list[JobListing]:
    if status is JobStatus.DEAD:
        return [
            JobListing(d.id, queue, JobStatus.DEAD, d.task, cursor=d.cursor)
            for d in await dead_letters(conn, schema, queue, limit, after)
        ]
    query = _listing(_s(schema), status)
    if query is None:
        raise ValueError(f"jobs cannot be listed by status {status.value!r}")
    # The cursor is the job's place in this listing; a page goes on after it.
    start = int(after) + 1 if after is not None else 0
    rows = await conn.fetch(f"{query} LIMIT $2 OFFSET $3", queue, limit, start)
    return [
        JobListing(r["id"], queue, JobStatus(r["status"]), r["task"], r["attempt"], r["eta"],
                   str(place))
        for place, r in enumerate(rows, start)
    ]  # fmt: skip
