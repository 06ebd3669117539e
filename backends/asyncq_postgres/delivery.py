"""The hot path of a ``postgresql://`` broker: enqueue, claim, settle and renew, batch in,
batch out, each one round trip where it can be.

* Enqueue: one ``INSERT ... SELECT FROM unnest(...)`` per batch (plus a statement per job
  with an idempotency key), and in the same transaction one ``NOTIFY`` per queue of the
  batch; concurrent callers share a batch, so under load the notifications go per batch,
  not per job. It runs on any asyncpg connection: the pool's, or the caller's own inside its
  transaction (transactional enqueue).
* Claim: :func:`schema`'s ``claim()`` function: due and lapsed rows back to ready, then
  ``SELECT ... ORDER BY priority DESC, ord, seq LIMIT n FOR UPDATE SKIP LOCKED`` and an
  ``UPDATE ... RETURNING``, in one call.
* Settle: successes in one ``UPDATE ... FROM unnest(...)``; the rarer outcomes one statement
  each, all in one transaction, which also notifies the jobs that finished.

Receipts: a claim adds one to the job's ``receipt`` and hands that number to the worker;
settling and renewing need it and the RUNNING state, so a worker whose lease lapsed (its job
taken back, perhaps delivered again) changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from asyncq.delivery import Delivery, Envelope
from asyncq.record_json import error_to_json
from asyncq.records import JobStatus
from asyncq.settlement import Outcome, Settlement
from asyncq.throughput import minute_of

from . import minutes
from .schema import READY, WAITING

__all__ = ["Claim", "Statements", "enqueue", "is_plain"]

_QUEUED, _SCHEDULED = JobStatus.QUEUED.value, JobStatus.SCHEDULED.value
_RELEASE, _RETRY, _SNOOZE = Outcome.RELEASE, Outcome.RETRY, Outcome.SNOOZE
_DEFER, _SUCCEEDED, _DEAD = Outcome.DEFER, Outcome.SUCCEEDED, Outcome.DEAD
_NOTIFY_BYTES = 7000  # a NOTIFY payload must stay under 8000 bytes


class Statements:
    """The SQL of one schema, formatted once."""

    def __init__(self, schema: str, channel: str) -> None:
        s = f'"{schema}"'
        self.schema, self.channel = schema, channel
        columns = (
            "id, queue, task, body, key, held_key, state, status, priority, ord, ready_at, "
            "eta, updated_at"
        )
        self.insert_many = f"""INSERT INTO {s}.jobs ({columns})
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[], $5::text[], $5::text[],
    $6::smallint[], $7::text[], $8::int[], $9::float8[], $9::float8[], $10::float8[],
    $11::float8[])
ON CONFLICT DO NOTHING"""
        # The usual batch (no idempotency key, no replay) in one statement, so in one round
        # trip and, outside a caller's transaction, one implicit transaction: the rows, any
        # queue not seen before, and a NOTIFY per queue, delivered on commit.
        self.enqueue_plain = f"""WITH stored AS ({self.insert_many}),
known AS (INSERT INTO {s}.queues SELECT unnest($12::text[]) ON CONFLICT DO NOTHING)
SELECT pg_notify($13, 'q:' || q) FROM unnest($14::text[]) q"""
        self.insert_one = f"""INSERT INTO {s}.jobs ({columns})
VALUES ($1, $2, $3, $4, $5, $5, $6, $7, $8, $9, $9, $10, $11) ON CONFLICT DO NOTHING
RETURNING id"""
        # A replay (a dead or cancelled job sent again under its id) starts afresh.
        self.replay = f"""INSERT INTO {s}.jobs ({columns})
VALUES ($1, $2, $3, $4, $5, $5, $6, $7, $8, $9, $9, $10, $11)
ON CONFLICT (id) DO UPDATE SET queue = excluded.queue, task = excluded.task,
    body = excluded.body, key = excluded.key, held_key = excluded.held_key,
    state = excluded.state, status = excluded.status, priority = excluded.priority,
    ord = excluded.ord, ready_at = excluded.ready_at, eta = excluded.eta, deferred = false,
    lease_until = NULL, redelivered = false, attempt = 1, snoozes = 0, result = NULL,
    error = NULL, progress = NULL, cancel_requested = false, updated_at = excluded.updated_at,
    expires_at = NULL
RETURNING id"""
        # A finished job whose row has not been deleted yet, past its time, holds no key.
        self.free_expired_key = f"""UPDATE {s}.jobs SET held_key = NULL
WHERE queue = $1 AND held_key = $2 AND state = 3 AND expires_at <= $3"""
        self.key_holder = f"SELECT id FROM {s}.jobs WHERE queue = $1 AND held_key = $2"
        self.add_queues = f"INSERT INTO {s}.queues SELECT unnest($1::text[]) ON CONFLICT DO NOTHING"
        self.notify = "SELECT pg_notify($1, 'q:' || q) FROM unnest($2::text[]) q"
        self.notify_one = "SELECT pg_notify($1, $2)"
        self.claim = f"SELECT * FROM {s}.claim($1::text[], $2, $3, $4)"
        self.finish_cancelled = f"""UPDATE {s}.jobs SET state = 3, status = 'cancelled',
    eta = NULL, lease_until = NULL, deferred = false, held_key = NULL, updated_at = $2,
    expires_at = $3 WHERE id = $1"""
        self.succeed = f"""UPDATE {s}.jobs j SET state = 3, status = 'succeeded', result = u.result,
    error = NULL, lease_until = NULL, updated_at = $4, expires_at = u.expires
FROM unnest($1::text[], $2::int[], $3::bytea[], $5::float8[]) AS u(id, receipt, result, expires)
WHERE j.id = u.id AND j.receipt = u.receipt AND j.state = 2"""
        # A batch of successes (the usual settle) in one statement, so one round trip and one
        # implicit transaction: the rows, and the NOTIFY of the finished ids in payloads of
        # at most _NOTIFY_BYTES (NOTIFY takes under 8000).
        # ... and the successes that landed, counted for their minute ($7, shard $8).
        counted = minutes.upsert(s).format(
            rows="SELECT queue, $7::bigint, $8::smallint, count(*), 0 FROM done GROUP BY queue"
        )
        self.succeed_and_notify = f"""WITH done AS ({self.succeed} RETURNING j.id, j.queue),
counted AS ({counted}),
parts AS (SELECT id, sum(length(id) + 1) OVER (ORDER BY id) / {_NOTIFY_BYTES} AS part FROM done)
SELECT pg_notify($6, 'd:' || string_agg(id, ',')) FROM parts GROUP BY part"""
        held = "WHERE id = $1 AND receipt = $2 AND state = 2"
        self.release = f"""UPDATE {s}.jobs SET state = 0, status = 'queued', lease_until = NULL,
    ready_at = $3, updated_at = $3 {held}"""
        self.defer = f"""UPDATE {s}.jobs SET state = $3, status = 'queued', eta = $4,
    deferred = $5, redelivered = false, lease_until = NULL, ord = $6, ready_at = $6,
    updated_at = $6 {held}"""
        self.retry = f"""UPDATE {s}.jobs SET state = $3, status = $4, eta = $5, body = $6,
    attempt = $7, error = $8, redelivered = false, lease_until = NULL, ord = $9,
    ready_at = $9, updated_at = $9 {held}"""
        self.snooze = f"""UPDATE {s}.jobs SET state = $3, status = $4, eta = $5, body = $6,
    snoozes = snoozes + 1, redelivered = false, lease_until = NULL, ord = $7, ready_at = $7,
    updated_at = $7 {held}"""
        self.end = f"""UPDATE {s}.jobs SET state = 3, status = $3, error = coalesce($4, error),
    lease_until = NULL, held_key = NULL, updated_at = $5, expires_at = $6 {held}
RETURNING task"""
        self.dead_letter = f"""INSERT INTO {s}.dead_letters (queue, job_id, task, body, error,
    died_at) VALUES ($1, $2, $3, $4, $5, $6)"""
        self.renew = f"""UPDATE {s}.jobs j SET lease_until = $3
FROM unnest($1::text[], $2::int[]) AS r(id, receipt)
WHERE j.id = r.id AND j.receipt = r.receipt AND j.state = 2"""
        self.next_wake = f"""SELECT
    EXISTS (SELECT 1 FROM {s}.jobs WHERE state = 0 AND queue = ANY($1::text[])),
    least((SELECT min(eta) FROM {s}.jobs WHERE state = 1 AND queue = ANY($1::text[])),
          (SELECT min(lease_until) FROM {s}.jobs WHERE state = 2 AND queue = ANY($1::text[])))"""


def is_plain(envelopes: Sequence[Envelope]) -> bool:
    """Whether a batch has no idempotency key and no replay: one statement stores it."""
    return all(env.key is None and not env.replay for env in envelopes)


async def enqueue(
    conn: asyncpg.Connection,
    sql: Statements,
    envelopes: Sequence[Envelope],
    now: float,
    known: set[str],
) -> list[str]:
    """Store a batch on ``conn`` and notify its queues; each job's id (an existing job's,
    where its idempotency key is held). A batch that is not :func:`is_plain` takes several
    statements: run it inside a transaction (the caller's, or one of ours)."""
    ids: list[str] = []
    columns: list[list[object]] = [[] for _ in range(11)]
    queues: set[str] = set()
    for env in envelopes:
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
            env.eta if delayed else None,
            now,
        )
        if env.key is not None:
            await conn.execute(sql.free_expired_key, env.queue, env.key, now)
            holder = await conn.fetchval(sql.key_holder, env.queue, env.key)
            if holder is not None:
                ids.append(holder)
                continue
            # Stored at once, not with the batch: a later job of the batch with the same key
            # must find this one (and a concurrent enqueue of the key waits for this one's
            # transaction on the unique index, then finds it).
            stored = await conn.fetchval(sql.replay if env.replay else sql.insert_one, *row)
            if stored is None:
                holder = await conn.fetchval(sql.key_holder, env.queue, env.key)
                ids.append(holder if holder is not None else env.id)
                continue
        elif env.replay:
            await conn.execute(sql.replay, *row)
        else:
            for column, value in zip(columns, row, strict=True):
                column.append(value)
        ids.append(env.id)
    unknown = [q for q in queues if q not in known]
    if len(columns[0]) == len(envelopes):  # all plain: one statement
        await conn.execute(sql.enqueue_plain, *columns, unknown, sql.channel, sorted(queues))
        return ids
    if columns[0]:
        await conn.execute(sql.insert_many, *columns)
    if unknown:
        await conn.execute(sql.add_queues, unknown)
    await conn.execute(sql.notify, sql.channel, sorted(queues))
    return ids


@dataclass(slots=True)
class Claim:
    deliveries: list[Delivery]
    cancelled: list[str]
    """Jobs whose cancellation was asked while a worker since lost ran them: finished as
    CANCELLED instead of delivered."""


async def claim(
    conn: asyncpg.Connection,
    sql: Statements,
    queues: Sequence[str],
    limit: int,
    now: float,
    visibility_timeout: float,
    result_ttl: float,
) -> Claim:
    rows = await conn.fetch(sql.claim, list(queues), limit, now, visibility_timeout)
    out = Claim([], [])
    if not rows:
        return out
    # RETURNING gives rows in the order they were changed, not the ORDER BY's.
    rows.sort(key=lambda r: (-r["priority"], r["ord"], r["seq"]))
    for r in rows:
        if r["cancel_requested"]:
            await conn.execute(sql.finish_cancelled, r["id"], now, now + result_ttl)
            out.cancelled.append(r["id"])
            continue
        out.deliveries.append(
            Delivery(r["id"], r["queue"], r["body"], r["receipt"], r["redelivered"], r["priority"])
        )
    return out


async def settle(
    conn: asyncpg.Connection,
    sql: Statements,
    settlements: Sequence[Settlement],
    now: float,
    result_ttl: float,
) -> list[str]:
    """Carry out a batch of settlements, atomically; the ids of the jobs that finished
    (notified to whoever waits for them)."""
    if all(s.outcome is _SUCCEEDED for s in settlements):
        ids, receipts, results, expires = _successes(settlements, now, result_ttl)
        await conn.execute(
            sql.succeed_and_notify, ids, receipts, results, now, expires, sql.channel,
            minute_of(now), minutes.shard(),
        )  # fmt: skip
        return ids
    async with conn.transaction():
        return await _settle_mixed(conn, sql, settlements, now, result_ttl)


def _successes(
    settlements: Sequence[Settlement], now: float, result_ttl: float
) -> tuple[list[str], list[int], list[bytes | None], list[float]]:
    ids: list[str] = []
    receipts: list[int] = []
    results: list[bytes | None] = []
    expires: list[float] = []
    for s in settlements:
        d = s.delivery
        ids.append(d.id)
        receipts.append(d.receipt)
        results.append(s.result)
        expires.append(now + (result_ttl if s.result_ttl is None else s.result_ttl))
    return ids, receipts, results, expires


async def _settle_mixed(
    conn: asyncpg.Connection,
    sql: Statements,
    settlements: Sequence[Settlement],
    now: float,
    result_ttl: float,
) -> list[str]:
    finished: list[str] = []
    succeeded: list[Settlement] = []
    for s in settlements:
        d, outcome = s.delivery, s.outcome
        if outcome is _SUCCEEDED:
            succeeded.append(s)
            finished.append(d.id)
        elif outcome is _RELEASE:
            await conn.execute(sql.release, d.id, d.receipt, now)
        elif outcome is _RETRY or outcome is _SNOOZE or outcome is _DEFER:
            await _again(conn, sql, s, now)
        else:
            ttl = result_ttl if s.result_ttl is None else s.result_ttl
            status = JobStatus.DEAD if outcome is _DEAD else JobStatus.CANCELLED
            error = error_to_json(s.error) if outcome is _DEAD and s.error is not None else None
            task = await conn.fetchval(
                sql.end, d.id, d.receipt, status.value, error, now, now + ttl
            )
            if task is None:
                continue  # a stale delivery
            if outcome is _DEAD:
                await conn.execute(
                    sql.dead_letter, d.queue, d.id, s.task or task, d.body, error or b"{}", now
                )
            finished.append(d.id)
    if succeeded:
        ids, receipts, results, expires = _successes(succeeded, now, result_ttl)
        await conn.execute(sql.succeed, ids, receipts, results, now, expires)
    await minutes.add(conn, f'"{sql.schema}"', settlements, now)
    await notify_finished(conn, sql, finished)
    return finished


async def notify_finished(conn: asyncpg.Connection, sql: Statements, ids: Sequence[str]) -> None:
    """Tell the waiters of other processes which jobs finished, in payloads under 8000 bytes."""
    chunk: list[str] = []
    size = 0
    for job_id in ids:
        if chunk and size + len(job_id) + 1 > _NOTIFY_BYTES:
            await conn.execute(sql.notify_one, sql.channel, "d:" + ",".join(chunk))
            chunk, size = [], 0
        chunk.append(job_id)
        size += len(job_id) + 1
    if chunk:
        await conn.execute(sql.notify_one, sql.channel, "d:" + ",".join(chunk))


async def _again(conn: asyncpg.Connection, sql: Statements, s: Settlement, now: float) -> None:
    """A retry, snooze or deferral: the job goes back, due at ``s.eta``."""
    d, outcome = s.delivery, s.outcome
    later = s.eta is not None and s.eta > now
    state = WAITING if later else READY
    eta = s.eta if later else None
    if outcome is _DEFER:  # unchanged: same body, attempt and snoozes; QUEUED while it waits
        await conn.execute(sql.defer, d.id, d.receipt, state, eta, later, now)
    elif outcome is _RETRY:
        status = JobStatus.FAILED.value if later else _QUEUED
        error = error_to_json(s.error) if s.error is not None else None
        await conn.execute(
            sql.retry, d.id, d.receipt, state, status, eta, s.retry_body, s.attempt + 1, error, now
        )
    else:
        status = _SCHEDULED if later else _QUEUED
        await conn.execute(sql.snooze, d.id, d.receipt, state, status, eta, s.retry_body, now)
