"""The tables of a ``sqlite://`` broker, created on first connect and versioned by
``PRAGMA user_version`` (a file written by a newer asyncq is refused, not misread).

A job is one row of ``jobs`` for its whole life. Its ``state`` says which of the queue's
structures it is in, each served by a partial index, so every step of the hot path is an
index seek that touches only the rows in that structure:

* 0 READY: waiting for a worker, in ``(priority DESC, ord, seq)`` order (highest priority
  first, FIFO within one; ``ord`` is when it became ready, kept by a job handed back so it
  goes to the front);
* 1 WAITING: not before ``eta`` (delayed, a retry's backoff, snoozed, or deferred by a
  limit, which still counts as pending);
* 2 RUNNING: held by the delivery ``receipt`` until ``lease_until``;
* 3 FINISHED: succeeded, dead or cancelled; the row goes at ``expires_at``.

``status`` is the user's word for it (QUEUED, FAILED, ...), which the state alone does not
tell. Idempotency keys, dead letters, heartbeats, periodic slots, cancellations and the
limits' state have tables of their own.
"""

from __future__ import annotations

import sqlite3

from ..errors import ConfigurationError

__all__ = ["FINISHED", "READY", "RUNNING", "SCHEMA_VERSION", "WAITING", "create"]

READY, WAITING, RUNNING, FINISHED = 0, 1, 2, 3

SCHEMA_VERSION = 2
"""2: minute_counts (every table is created IF NOT EXISTS, so 1 becomes 2 by the same script)."""

_TABLES = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    queue TEXT NOT NULL,
    task TEXT NOT NULL,
    body BLOB NOT NULL,
    key TEXT,
    state INTEGER NOT NULL,
    status TEXT NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0,
    ord REAL NOT NULL,
    ready_at REAL NOT NULL,
    eta REAL,
    deferred INTEGER NOT NULL DEFAULT 0,
    receipt INTEGER NOT NULL DEFAULT 0,
    lease_until REAL,
    redelivered INTEGER NOT NULL DEFAULT 0,
    attempt INTEGER NOT NULL DEFAULT 1,
    snoozes INTEGER NOT NULL DEFAULT 0,
    result BLOB,
    error BLOB,
    progress BLOB,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    updated_at REAL NOT NULL,
    expires_at REAL
);
CREATE INDEX IF NOT EXISTS jobs_ready ON jobs (queue, priority DESC, ord, seq) WHERE state = 0;
CREATE INDEX IF NOT EXISTS jobs_waiting ON jobs (queue, eta) WHERE state = 1;
CREATE INDEX IF NOT EXISTS jobs_running ON jobs (queue, lease_until) WHERE state = 2;
CREATE INDEX IF NOT EXISTS jobs_expiry ON jobs (expires_at) WHERE state = 3;

CREATE TABLE IF NOT EXISTS queues (name TEXT PRIMARY KEY) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS idempotency_keys (
    queue TEXT NOT NULL,
    key TEXT NOT NULL,
    job_id TEXT NOT NULL,
    PRIMARY KEY (queue, key)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS dead_letters (
    seq INTEGER PRIMARY KEY,
    queue TEXT NOT NULL,
    job_id TEXT NOT NULL,
    task TEXT NOT NULL,
    body BLOB NOT NULL,
    error BLOB NOT NULL,
    died_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS dead_letters_queue ON dead_letters (queue, seq);
CREATE INDEX IF NOT EXISTS dead_letters_job ON dead_letters (queue, job_id, seq);

CREATE TABLE IF NOT EXISTS cancellations (
    seq INTEGER PRIMARY KEY,
    job_id TEXT NOT NULL,
    at REAL NOT NULL
);

CREATE TABLE IF NOT EXISTS workers (
    id TEXT PRIMARY KEY,
    info BLOB NOT NULL,
    expires REAL NOT NULL
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS slot_claims (
    schedule TEXT NOT NULL,
    slot_ms INTEGER NOT NULL,
    until REAL NOT NULL,
    job_id TEXT NOT NULL,
    PRIMARY KEY (schedule, slot_ms)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS slot_claims_until ON slot_claims (until);

CREATE TABLE IF NOT EXISTS paused_schedules (schedule TEXT PRIMARY KEY) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS rate_permits (key TEXT NOT NULL, until REAL NOT NULL);
CREATE INDEX IF NOT EXISTS rate_permits_key ON rate_permits (key, until);
CREATE INDEX IF NOT EXISTS rate_permits_until ON rate_permits (until);
CREATE TABLE IF NOT EXISTS rate_waiters (
    key TEXT NOT NULL,
    token TEXT NOT NULL,
    at REAL NOT NULL,
    PRIMARY KEY (key, token)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS concurrency_keys (
    key TEXT PRIMARY KEY,
    hold REAL,
    touched REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS concurrency_holders (
    key TEXT NOT NULL,
    holder TEXT NOT NULL,
    until REAL NOT NULL,
    PRIMARY KEY (key, holder)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS concurrency_waiters (
    key TEXT NOT NULL,
    holder TEXT NOT NULL,
    at REAL NOT NULL,
    PRIMARY KEY (key, holder)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS order_lines (
    key TEXT PRIMARY KEY,
    issued INTEGER NOT NULL,
    head INTEGER NOT NULL,
    seen REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS minute_counts (
    queue TEXT NOT NULL,
    minute INTEGER NOT NULL,
    succeeded INTEGER NOT NULL,
    failed INTEGER NOT NULL,
    PRIMARY KEY (queue, minute)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS order_voided (
    key TEXT NOT NULL,
    ticket INTEGER NOT NULL,
    PRIMARY KEY (key, ticket)
) WITHOUT ROWID;
"""


def create(conn: sqlite3.Connection, path: str) -> None:
    """Create the tables in a new file; check the version of an existing one. Runs inside
    the caller's write transaction, so two processes starting together do not race."""
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    if version > SCHEMA_VERSION:
        raise ConfigurationError(
            f"{path} was written by a newer asyncq (schema {version}, this one knows "
            f"{SCHEMA_VERSION}): upgrade asyncq, or name another file"
        )
    if version == SCHEMA_VERSION:
        return
    for statement in _TABLES.split(";"):
        if statement.strip():
            conn.execute(statement)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
