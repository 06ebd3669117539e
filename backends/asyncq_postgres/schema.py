"""asyncq's tables in PostgreSQL, in a schema of their own (``schema=``, default ``asyncq``),
created on first connect and versioned by ``<schema>.migrations``: one row per applied
migration. Upgrades run in one transaction under an advisory lock, so workers starting
together on an empty database do not race (one migrates, the others wait for it, then find
nothing to do); a database migrated by a newer asyncq is refused, not misread.
``asyncq db upgrade --dry-run`` prints the SQL, for teams that run migrations themselves.

A job is one row of ``jobs`` for its whole life; its ``state`` says which structure it is
in, each served by a partial index, so the hot path touches only the rows of one:

* 0 READY: waiting for a worker, in ``(priority DESC, ord, seq)`` order;
* 1 WAITING: not before ``eta`` (delayed, a retry's backoff, snoozed, or deferred by a limit,
  which still counts as pending);
* 2 RUNNING: held by the delivery ``receipt`` until ``lease_until``;
* 3 FINISHED: succeeded, dead or cancelled; the row goes at ``expires_at``.

An idempotency key is held by the job in ``held_key`` and made unique per queue by a
partial unique index: it is cleared when the job ends other than in success, and the row's
deletion frees it after a success. Times are seconds since the epoch (``float8``), as the
workers' clocks give them: keep the hosts' clocks in sync (NTP), as for every backend.
"""

from __future__ import annotations

import asyncpg

from asyncq.errors import ConfigurationError

__all__ = [
    "FINISHED",
    "MIGRATIONS",
    "READY",
    "RUNNING",
    "WAITING",
    "applied_version",
    "check_current",
    "check_version",
    "migration_sql",
    "upgrade",
]

READY, WAITING, RUNNING, FINISHED = 0, 1, 2, 3

_V1 = """
CREATE TABLE {s}.jobs (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id text NOT NULL UNIQUE,
    queue text NOT NULL,
    task text NOT NULL,
    body bytea NOT NULL,
    key text,
    held_key text,
    state smallint NOT NULL,
    status text NOT NULL,
    priority int NOT NULL DEFAULT 0,
    ord float8 NOT NULL,
    ready_at float8 NOT NULL,
    eta float8,
    deferred boolean NOT NULL DEFAULT false,
    receipt int NOT NULL DEFAULT 0,
    lease_until float8,
    redelivered boolean NOT NULL DEFAULT false,
    attempt int NOT NULL DEFAULT 1,
    snoozes int NOT NULL DEFAULT 0,
    result bytea,
    error bytea,
    progress bytea,
    cancel_requested boolean NOT NULL DEFAULT false,
    updated_at float8 NOT NULL,
    expires_at float8
) WITH (fillfactor = 80);
CREATE INDEX jobs_ready ON {s}.jobs (queue, priority DESC, ord, seq) WHERE state = 0;
CREATE INDEX jobs_waiting ON {s}.jobs (queue, eta) WHERE state = 1;
CREATE INDEX jobs_running ON {s}.jobs (queue, lease_until) WHERE state = 2;
CREATE INDEX jobs_expiry ON {s}.jobs (expires_at) WHERE state = 3;
CREATE UNIQUE INDEX jobs_held_key ON {s}.jobs (queue, held_key) WHERE held_key IS NOT NULL;

CREATE TABLE {s}.queues (name text PRIMARY KEY);

CREATE TABLE {s}.dead_letters (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    queue text NOT NULL,
    job_id text NOT NULL,
    task text NOT NULL,
    body bytea NOT NULL,
    error bytea NOT NULL,
    died_at float8 NOT NULL
);
CREATE INDEX dead_letters_queue ON {s}.dead_letters (queue, seq);
CREATE INDEX dead_letters_job ON {s}.dead_letters (queue, job_id, seq);

CREATE TABLE {s}.cancellations (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id text NOT NULL,
    at float8 NOT NULL
);

CREATE TABLE {s}.workers (id text PRIMARY KEY, info bytea NOT NULL, expires float8 NOT NULL);

CREATE TABLE {s}.slot_claims (
    schedule text NOT NULL,
    slot_ms bigint NOT NULL,
    until float8 NOT NULL,
    job_id text NOT NULL,
    PRIMARY KEY (schedule, slot_ms)
);
CREATE INDEX slot_claims_until ON {s}.slot_claims (until);
CREATE TABLE {s}.paused_schedules (schedule text PRIMARY KEY);

CREATE TABLE {s}.rate_permits (key text NOT NULL, until float8 NOT NULL);
CREATE INDEX rate_permits_key ON {s}.rate_permits (key, until);
CREATE INDEX rate_permits_until ON {s}.rate_permits (until);
CREATE TABLE {s}.rate_waiters (
    key text NOT NULL, token text NOT NULL, at float8 NOT NULL, PRIMARY KEY (key, token)
);
CREATE TABLE {s}.concurrency_keys (key text PRIMARY KEY, hold float8, touched float8 NOT NULL);
CREATE TABLE {s}.concurrency_holders (
    key text NOT NULL, holder text NOT NULL, until float8 NOT NULL, PRIMARY KEY (key, holder)
);
CREATE TABLE {s}.concurrency_waiters (
    key text NOT NULL, holder text NOT NULL, at float8 NOT NULL, PRIMARY KEY (key, holder)
);
CREATE TABLE {s}.order_lines (
    key text PRIMARY KEY, issued bigint NOT NULL, head bigint NOT NULL, seen float8 NOT NULL
);
CREATE TABLE {s}.order_voided (
    key text NOT NULL, ticket bigint NOT NULL, PRIMARY KEY (key, ticket)
);

-- One round trip takes a batch: due delayed jobs and lapsed leases of these queues go back
-- to ready (rows another claimer holds are skipped, not waited for), then up to `n` ready
-- jobs are leased, highest priority first, FIFO within one.
CREATE FUNCTION {s}.claim(qs text[], n int, now float8, lease float8)
RETURNS TABLE (id text, queue text, body bytea, receipt int, redelivered boolean,
               priority int, cancel_requested boolean, key text, ord float8, seq bigint)
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE {s}.jobs j SET state = 0, status = 'queued', ord = j.eta, ready_at = j.eta,
        eta = NULL, deferred = false
    WHERE j.seq IN (SELECT w.seq FROM {s}.jobs w WHERE w.state = 1 AND w.queue = ANY(qs)
                    AND w.eta <= now FOR UPDATE SKIP LOCKED);
    -- A lost worker's job goes back to the front of its priority (its ord is kept).
    UPDATE {s}.jobs j SET state = 0, status = 'queued', redelivered = true,
        ready_at = j.lease_until, lease_until = NULL
    WHERE j.seq IN (SELECT r.seq FROM {s}.jobs r WHERE r.state = 2 AND r.queue = ANY(qs)
                    AND r.lease_until <= now FOR UPDATE SKIP LOCKED);
    RETURN QUERY
    UPDATE {s}.jobs j SET state = 2, status = 'running', receipt = j.receipt + 1,
        lease_until = now + lease, updated_at = now
    FROM (SELECT t.seq FROM {s}.jobs t WHERE t.state = 0 AND t.queue = ANY(qs)
          ORDER BY t.priority DESC, t.ord, t.seq LIMIT n FOR UPDATE SKIP LOCKED) picked
    WHERE j.seq = picked.seq
    RETURNING j.id, j.queue, j.body, j.receipt, j.redelivered, j.priority,
        j.cancel_requested, j.key, j.ord, j.seq;
END
$$;
"""

_CLAIM_V2 = """
-- One round trip takes a batch: due delayed jobs and lapsed leases of these queues go back
-- to ready (rows another claimer holds are skipped, not waited for), then up to `n` ready
-- jobs are leased, highest priority first, FIFO within one. Each queue's ready rows are read
-- by an equality on `queue`, so jobs_ready hands them over in order and the scan stops
-- after `n`: `queue = ANY(qs)` cannot use the index order, and sorted the whole backlog on
-- every claim (30 ms at 60,000 ready jobs). Several queues: up to `n` from each, the best
-- `n` of those kept; the rest stay locked only until this statement's transaction ends.
CREATE OR REPLACE FUNCTION {s}.claim(qs text[], n int, now float8, lease float8)
RETURNS TABLE (id text, queue text, body bytea, receipt int, redelivered boolean,
               priority int, cancel_requested boolean, key text, ord float8, seq bigint)
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE {s}.jobs j SET state = 0, status = 'queued', ord = j.eta, ready_at = j.eta,
        eta = NULL, deferred = false
    WHERE j.seq IN (SELECT w.seq FROM {s}.jobs w WHERE w.state = 1 AND w.queue = ANY(qs)
                    AND w.eta <= now FOR UPDATE SKIP LOCKED);
    -- A lost worker's job goes back to the front of its priority (its ord is kept).
    UPDATE {s}.jobs j SET state = 0, status = 'queued', redelivered = true,
        ready_at = j.lease_until, lease_until = NULL
    WHERE j.seq IN (SELECT r.seq FROM {s}.jobs r WHERE r.state = 2 AND r.queue = ANY(qs)
                    AND r.lease_until <= now FOR UPDATE SKIP LOCKED);
    IF cardinality(qs) = 1 THEN
        RETURN QUERY
        UPDATE {s}.jobs j SET state = 2, status = 'running', receipt = j.receipt + 1,
            lease_until = now + lease, updated_at = now
        FROM (SELECT t.seq FROM {s}.jobs t WHERE t.state = 0 AND t.queue = qs[1]
              ORDER BY t.priority DESC, t.ord, t.seq LIMIT n FOR UPDATE SKIP LOCKED) picked
        WHERE j.seq = picked.seq
        RETURNING j.id, j.queue, j.body, j.receipt, j.redelivered, j.priority,
            j.cancel_requested, j.key, j.ord, j.seq;
    ELSE
        RETURN QUERY
        UPDATE {s}.jobs j SET state = 2, status = 'running', receipt = j.receipt + 1,
            lease_until = now + lease, updated_at = now
        FROM (SELECT c.seq FROM unnest(qs) AS q(name),
                LATERAL (SELECT t.seq, t.priority, t.ord FROM {s}.jobs t
                         WHERE t.state = 0 AND t.queue = q.name
                         ORDER BY t.priority DESC, t.ord, t.seq LIMIT n
                         FOR UPDATE SKIP LOCKED) c
              ORDER BY c.priority DESC, c.ord, c.seq LIMIT n) picked
        WHERE j.seq = picked.seq
        RETURNING j.id, j.queue, j.body, j.receipt, j.redelivered, j.priority,
            j.cancel_requested, j.key, j.ord, j.seq;
    END IF;
END
$$;
"""

_CLAIM_V3 = """
-- claim() as in migration 2, but without waiting for the disk at commit: one WAL flush
-- (0.1 ms to several ms, by the disk) less between a job's enqueue and its start.
CREATE OR REPLACE FUNCTION {s}.claim(qs text[], n int, now float8, lease float8)
RETURNS TABLE (id text, queue text, body bytea, receipt int, redelivered boolean,
               priority int, cancel_requested boolean, key text, ord float8, seq bigint)
LANGUAGE plpgsql AS $$
BEGIN
    -- This transaction's commit need not wait for its WAL to reach the disk (the server's
    -- own setting stays in force for everything else). A claim lost in a server crash only
    -- puts its jobs back in line: they run again, as at-least-once allows. The settle that
    -- follows a claim commits durably, and so flushes the claim's WAL before it.
    PERFORM set_config('synchronous_commit', 'off', true);
    UPDATE {s}.jobs j SET state = 0, status = 'queued', ord = j.eta, ready_at = j.eta,
        eta = NULL, deferred = false
    WHERE j.seq IN (SELECT w.seq FROM {s}.jobs w WHERE w.state = 1 AND w.queue = ANY(qs)
                    AND w.eta <= now FOR UPDATE SKIP LOCKED);
    -- A lost worker's job goes back to the front of its priority (its ord is kept).
    UPDATE {s}.jobs j SET state = 0, status = 'queued', redelivered = true,
        ready_at = j.lease_until, lease_until = NULL
    WHERE j.seq IN (SELECT r.seq FROM {s}.jobs r WHERE r.state = 2 AND r.queue = ANY(qs)
                    AND r.lease_until <= now FOR UPDATE SKIP LOCKED);
    IF cardinality(qs) = 1 THEN
        RETURN QUERY
        UPDATE {s}.jobs j SET state = 2, status = 'running', receipt = j.receipt + 1,
            lease_until = now + lease, updated_at = now
        FROM (SELECT t.seq FROM {s}.jobs t WHERE t.state = 0 AND t.queue = qs[1]
              ORDER BY t.priority DESC, t.ord, t.seq LIMIT n FOR UPDATE SKIP LOCKED) picked
        WHERE j.seq = picked.seq
        RETURNING j.id, j.queue, j.body, j.receipt, j.redelivered, j.priority,
            j.cancel_requested, j.key, j.ord, j.seq;
    ELSE
        RETURN QUERY
        UPDATE {s}.jobs j SET state = 2, status = 'running', receipt = j.receipt + 1,
            lease_until = now + lease, updated_at = now
        FROM (SELECT c.seq FROM unnest(qs) AS q(name),
                LATERAL (SELECT t.seq, t.priority, t.ord FROM {s}.jobs t
                         WHERE t.state = 0 AND t.queue = q.name
                         ORDER BY t.priority DESC, t.ord, t.seq LIMIT n
                         FOR UPDATE SKIP LOCKED) c
              ORDER BY c.priority DESC, c.ord, c.seq LIMIT n) picked
        WHERE j.seq = picked.seq
        RETURNING j.id, j.queue, j.body, j.receipt, j.redelivered, j.priority,
            j.cancel_requested, j.key, j.ord, j.seq;
    END IF;
END
$$;
"""

_MINUTES_V4 = """
-- Finished attempts per queue and minute, for the dashboard's chart (minutes.py): each
-- settle adds to one of a few rows (shard) of its minute, so settles do not queue up on one
-- row's lock; rows go after an hour.
CREATE TABLE {s}.minute_counts (
    queue text NOT NULL,
    minute bigint NOT NULL,
    shard smallint NOT NULL,
    succeeded int NOT NULL DEFAULT 0,
    failed int NOT NULL DEFAULT 0,
    PRIMARY KEY (queue, minute, shard)
);
"""

_SWEEP_V2 = """
CREATE INDEX cancellations_at ON {s}.cancellations (at);

-- The stale rows of the small tables, in one round trip: cancellation requests kept
-- `cancel_keep` seconds; rate and concurrency state of keys gone quiet; order lines whose
-- every ticket started, quiet for `order_quiet` seconds.
CREATE FUNCTION {s}.sweep(now float8, cancel_keep float8, gone float8, rate_gone float8,
                          quiet float8, order_quiet float8)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM {s}.cancellations WHERE at <= now - cancel_keep;
    DELETE FROM {s}.slot_claims WHERE until <= now;
    DELETE FROM {s}.rate_permits WHERE until <= now;
    DELETE FROM {s}.rate_waiters WHERE at <= now - rate_gone;
    DELETE FROM {s}.concurrency_holders WHERE until <= now;
    DELETE FROM {s}.concurrency_waiters WHERE at <= now - gone;
    DELETE FROM {s}.concurrency_keys k WHERE touched < now - quiet
        AND NOT EXISTS (SELECT 1 FROM {s}.concurrency_holders h WHERE h.key = k.key);
    DELETE FROM {s}.order_lines WHERE head > issued AND seen < now - order_quiet;
    DELETE FROM {s}.order_voided v
        WHERE NOT EXISTS (SELECT 1 FROM {s}.order_lines l WHERE l.key = v.key);
END
$$;
"""

_UNSURE_V5 = """
-- Records the AMQP backend keeps here: a job whose publish got no answer (the connection
-- went) may or may not be in its RabbitMQ queue; an enqueue of its key replaces it
-- (amqp_records.py).
ALTER TABLE {s}.jobs ADD COLUMN publish_unsure boolean NOT NULL DEFAULT false;
"""

MIGRATIONS: tuple[str, ...] = (
    _V1,
    _CLAIM_V2 + _SWEEP_V2,
    _CLAIM_V3,
    _MINUTES_V4,
    _UNSURE_V5,
)
"""Migration n + 1 is ``MIGRATIONS[n]``; each is applied once, in order, in one transaction."""

SCHEMA_VERSION = len(MIGRATIONS)

_LEDGER = """CREATE SCHEMA IF NOT EXISTS {s};
CREATE TABLE IF NOT EXISTS {s}.migrations (
    version int PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
);"""


def _quoted(schema: str) -> str:
    return f'"{schema}"'


def _lock_key(schema: str) -> str:
    return f"SELECT pg_advisory_xact_lock(hashtextextended('asyncq migrate {schema}', 0))"


def migration_sql(schema: str, applied: int = 0) -> str:
    """The SQL that brings a schema at version ``applied`` to this asyncq's, as one script."""
    s = _quoted(schema)
    parts = ["BEGIN;", _lock_key(schema) + ";", _LEDGER.format(s=s)]
    for version in range(applied + 1, SCHEMA_VERSION + 1):
        parts.append(f"-- migration {version}")
        parts.append(MIGRATIONS[version - 1].format(s=s).strip())
        parts.append(f"INSERT INTO {s}.migrations (version) VALUES ({version});")
    parts.append("COMMIT;")
    return "\n".join(parts) + "\n"


async def applied_version(conn: asyncpg.Connection, schema: str) -> int:
    """The newest migration applied to ``schema`` (0: none, or no schema yet)."""
    exists = await conn.fetchval("SELECT to_regclass($1)", f"{_quoted(schema)}.migrations")
    if exists is None:
        return 0
    version = await conn.fetchval(f"SELECT max(version) FROM {_quoted(schema)}.migrations")
    return int(version or 0)


def check_version(schema: str, version: int) -> None:
    if version > SCHEMA_VERSION:
        raise ConfigurationError(
            f"the PostgreSQL schema {schema!r} was migrated by a newer asyncq (version "
            f"{version}, this one knows {SCHEMA_VERSION}): upgrade asyncq, or use another schema"
        )


async def check_current(conn: asyncpg.Connection, schema: str) -> None:
    """With ``migrate=false``: the schema must be at this asyncq's version already."""
    version = await applied_version(conn, schema)
    check_version(schema, version)
    if version < SCHEMA_VERSION:
        raise ConfigurationError(
            f"the PostgreSQL schema {schema!r} is at version {version}, this asyncq needs "
            f"{SCHEMA_VERSION}, and the URL says migrate=false: apply the migrations "
            "(`asyncq db upgrade MODULE:APP`, or `--dry-run` for the SQL), or drop migrate=false"
        )


async def upgrade(conn: asyncpg.Connection, schema: str) -> int:
    """Apply the migrations ``schema`` lacks; how many were applied."""
    version = await applied_version(conn, schema)
    check_version(schema, version)
    if version == SCHEMA_VERSION:
        return 0
    s = _quoted(schema)
    async with conn.transaction():
        await conn.execute(_lock_key(schema))
        await conn.execute(_LEDGER.format(s=s))
        # Read again under the lock: another process may have migrated meanwhile.
        version = await applied_version(conn, schema)
        check_version(schema, version)
        for v in range(version + 1, SCHEMA_VERSION + 1):
            await conn.execute(MIGRATIONS[v - 1].format(s=s))
            await conn.execute(f"INSERT INTO {s}.migrations (version) VALUES ($1)", v)
        return SCHEMA_VERSION - version
