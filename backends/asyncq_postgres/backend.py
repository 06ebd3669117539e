"""The ``postgresql://`` backend: the whole contract in a schema of one PostgreSQL database,
on asyncpg.

Producers insert rows (and ``NOTIFY`` the queue in the same transaction); workers claim
batches with ``FOR UPDATE SKIP LOCKED`` (so any number of them share a queue without
waiting for each other), hold each job leased for ``visibility_timeout``, renewed while
they live, and settle batches. A worker killed mid-job leaves its lease to run out; the
next claim of any worker takes the job back (``redelivered=True``), so a lost job waits
one visibility timeout, not a fixed hour. Delayed jobs and retries become ready in the
claim itself: no leader, no scheduler process.

Connections: each App's pool holds up to ``pool_size`` (default 10); a worker, or a
producer awaiting results, opens one more that only listens. Options: see :mod:`.settings`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Self
from urllib.parse import urlsplit

import anyio
import anyio.lowlevel

from asyncq.backend import Backend
from asyncq.coalescing import Coalescer
from asyncq.delivery import Delivery, Envelope
from asyncq.errors import BrokerError, BrokerUnavailable, LeaseLost
from asyncq.records import (
    DeadLetter,
    JobListing,
    JobStatus,
    MinuteCounts,
    QueueStats,
    TrimmedDeadLetters,
)
from asyncq.settlement import Outcome, Settlement
from asyncq.store import JobStore
from asyncq.throughput import minute_of

from . import delivery, operations, transactions, upkeep
from . import minutes as minute_rows
from .database import CONNECTION_ERRORS, Database, Signal
from .delivery import Statements
from .settings import PostgresSettings
from .store import PostgresStore

__all__ = ["PostgresBackend"]

log = logging.getLogger("asyncq.postgres")

UPKEEP_INTERVAL = 1.0
"""Seconds between two rounds of a worker's upkeep (expired rows, stale limit state)."""
_LOCKED_RETRY = 0.005
"""Seconds to wait when ready jobs exist but other claimers hold them all (they are being
leased): they will be running in a moment, or released."""


_BACK_IN_LINE = frozenset((Outcome.RELEASE, Outcome.RETRY, Outcome.SNOOZE, Outcome.DEFER))
"""Outcomes that put a job back in line (ready, or waiting for its time)."""


def _body_size(envelope: Envelope) -> int:
    return len(envelope.body)


class PostgresBackend(Backend):
    """asyncq's semantics in PostgreSQL."""

    system = "postgresql"

    def __init__(self, settings: PostgresSettings) -> None:
        self.settings = settings
        self.visibility_timeout = settings.visibility_timeout
        self.result_ttl = settings.result_ttl
        self.lease_renewal_interval = settings.visibility_timeout / 3
        self.dead_ttl, self.dead_max = settings.dead_ttl, settings.dead_max
        self.max_message_size = settings.max_message_size
        self._db = Database(settings)
        self._s = f'"{settings.schema}"'
        self.sql = Statements(settings.schema, self._db.channel)
        self._store = PostgresStore(self._db, settings.result_ttl)
        self._jobs = Signal()
        self._db.on_notification = self._notified
        self._db.on_listen_lost = self._look_again
        self._enqueues: Coalescer[Envelope, str] = Coalescer(
            self._send_jobs, weight=_body_size, in_flight=min(4, settings.pool_size)
        )
        self._known_queues: set[str] = set()
        self._returns_in_flight = 0
        self._returns_landed = anyio.Event()

    @classmethod
    def from_url(cls, url: str) -> Self:
        return cls(PostgresSettings.from_url(url))

    @property
    def store(self) -> JobStore:
        return self._store

    async def connect(self) -> None:
        await self._db.open()

    async def close(self) -> None:
        await self._db.close()

    async def pending_migrations(self) -> str:
        """For ``asyncq db upgrade --dry-run``: the SQL the schema lacks ('' if none)."""
        return await self._db.pending_migrations()

    async def upgrade_schema(self) -> int:
        """For ``asyncq db upgrade``: apply what the schema lacks; how many migrations."""
        return await self._db.upgrade()

    def describe(self) -> str:
        parts = urlsplit(self.settings.dsn)
        where = parts.hostname or "the local socket"
        port = f":{parts.port}" if parts.port else ""
        database = parts.path.lstrip("/") or "(the user's database)"
        return f"PostgreSQL at {where}{port}, database {database}, schema {self.settings.schema}"

    # -- wake-ups --------------------------------------------------------------------------
    def _notified(self, payload: str) -> None:
        kind, _, rest = payload.partition(":")
        if kind == "q":
            self._jobs.poke()
        elif kind == "d":
            self._store.wake_finished(rest.split(","))
        elif kind == "c":
            self._store.cancellations.poke()

    def _look_again(self) -> None:
        self._jobs.poke()
        self._store.wake_all()

    # -- producing -------------------------------------------------------------------------
    async def enqueue(self, envelopes: Sequence[Envelope]) -> list[str]:
        return await self._enqueues.submit(envelopes)

    async def _send_jobs(self, envelopes: Sequence[Envelope]) -> list[str]:
        known = self._known_queues
        async with self._db.connection() as conn:
            if delivery.is_plain(envelopes):  # one statement: a transaction by itself
                ids = await delivery.enqueue(conn, self.sql, envelopes, time.time(), known)
            else:
                async with conn.transaction():
                    ids = await delivery.enqueue(conn, self.sql, envelopes, time.time(), known)
        known.update(env.queue for env in envelopes)  # committed: known from now on
        self._jobs.poke()
        return ids

    def check_transaction_connection(self, connection: object) -> None:
        transactions.check(connection)

    async def enqueue_in_transaction(
        self, connection: object, envelopes: Sequence[Envelope]
    ) -> list[str]:
        """Write the jobs in the caller's transaction; its commit sends the ``NOTIFY`` that
        wakes the workers (this process's too, through its listener)."""
        conn, in_transaction = await transactions.driver_connection(connection)
        try:
            if in_transaction or delivery.is_plain(envelopes):
                return await delivery.enqueue(
                    conn, self.sql, envelopes, time.time(), self._known_queues
                )
            async with conn.transaction():
                return await delivery.enqueue(
                    conn, self.sql, envelopes, time.time(), self._known_queues
                )
        except CONNECTION_ERRORS as exc:
            raise BrokerUnavailable(f"lost the connection to PostgreSQL: {exc!r}") from None

    async def complete_in_transaction(
        self, connection: object, delivery: Delivery, result: bytes | None, result_ttl: float | None
    ) -> None:
        """The success, and its ``NOTIFY`` to whoever waits for the result, in the caller's
        transaction: one statement, receipt-guarded like every settle."""
        conn, in_transaction = await transactions.driver_connection(connection)
        if not in_transaction:
            raise ValueError(
                "complete_in() needs a connection inside a transaction (asyncpg: `async with "
                "conn.transaction():`; SQLAlchemy: `engine.begin()` or `session.begin()`): "
                "outside one there is nothing to commit together with"
            )
        now = time.time()
        expires = now + (self.result_ttl if result_ttl is None else result_ttl)
        try:
            notified = await conn.fetch(
                self.sql.succeed_and_notify, [delivery.id], [delivery.receipt], [result], now,
                [expires], self.sql.channel, minute_of(now), minute_rows.shard(),
            )  # fmt: skip
        except CONNECTION_ERRORS as exc:
            raise BrokerUnavailable(f"lost the connection to PostgreSQL: {exc!r}") from None
        if not notified:  # no row changed: the job is no longer this delivery's
            raise LeaseLost(
                f"job {delivery.id} is no longer held by this worker (its lease ran out and "
                "it went back to its queue): roll back",
                job_id=delivery.id,
            )

    # -- consuming -------------------------------------------------------------------------
    async def fetch(
        self, queues: Sequence[str], limit: int, *, timeout: float | None
    ) -> list[Delivery]:
        self._db.ensure_listening()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            change = self._jobs.next_change()
            # Settles and claims go on different connections of the pool: a claim waits for
            # the settles already sent that return jobs, so this worker sees its own (a
            # snoozed or released job is back in line before the next claim), as on one
            # connection.
            while self._returns_in_flight:
                await self._returns_landed.wait()
            async with self._db.connection() as conn:
                claim = await delivery.claim(
                    conn, self.sql, queues, limit, time.time(), self.visibility_timeout,
                    self.result_ttl,
                )  # fmt: skip
                if claim.cancelled:
                    await delivery.notify_finished(conn, self.sql, claim.cancelled)
                    self._store.wake_finished(claim.cancelled)
                if claim.deliveries:
                    return claim.deliveries
                ready, wake_at = await conn.fetchrow(self.sql.next_wake, list(queues))
            now = time.time()
            if ready:
                wait = _LOCKED_RETRY
            else:
                wait = self.settings.idle_look
                if wake_at is not None:
                    wait = min(wait, max(wake_at - now, 0.0))
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return []
                wait = min(wait, remaining)
            if wait > 0:
                await self._jobs.until(change, wait)

    async def settle(self, settlements: Sequence[Settlement]) -> None:
        # Only a batch that puts jobs back in line holds up this worker's next claim: a
        # claim overlaps a batch of successes, which frees nothing it could take.
        returns = any(s.outcome in _BACK_IN_LINE for s in settlements)
        self._returns_in_flight += returns
        try:
            async with self._db.connection() as conn:
                finished = await delivery.settle(
                    conn, self.sql, settlements, time.time(), self.result_ttl
                )
        finally:
            if returns:
                self._returns_in_flight -= 1
                if not self._returns_in_flight:
                    self._returns_landed.set()
                    self._returns_landed = anyio.Event()
        self._store.wake_finished(finished)
        if returns:
            self._jobs.poke()

    counts_minutes = True

    async def minute_counts(self, queues: Sequence[str], minutes: int) -> list[MinuteCounts]:
        return await self._store.minute_counts(queues, minutes)

    async def renew(self, deliveries: Sequence[Delivery]) -> None:
        lease_until = time.time() + self.visibility_timeout
        async with self._db.connection() as conn:
            await conn.execute(
                self.sql.renew, [d.id for d in deliveries], [d.receipt for d in deliveries],
                lease_until,
            )  # fmt: skip

    async def maintain(self, queues: Sequence[str]) -> None:
        try:
            async with self._db.connection() as conn:
                await upkeep.warn_without_autovacuum(conn, self._s)
        except BrokerError as exc:
            log.debug("postgres upkeep: %s", exc)
        while True:
            await anyio.sleep(UPKEEP_INTERVAL)
            try:
                async with self._db.connection() as conn:
                    s = self._s
                    while await upkeep.expire_jobs(conn, s, time.time()) >= upkeep.EXPIRE_BATCH:
                        await anyio.lowlevel.checkpoint()
                    await upkeep.sweep(conn, s, time.time())
                    await minute_rows.sweep(conn, s, time.time())
            except BrokerError as exc:  # the server away: the next round tries again
                log.debug("postgres upkeep: %s", exc)

    async def trim_dead(self, queues: Sequence[str]) -> list[TrimmedDeadLetters]:
        cutoff = None if self.dead_ttl is None else time.time() - self.dead_ttl
        async with self._db.connection() as conn:
            return await operations.trim_dead(
                conn, self.settings.schema, queues, cutoff, self.dead_max
            )

    # -- operations ------------------------------------------------------------------------
    async def queue_stats(self, queues: Sequence[str] | None = None) -> list[QueueStats]:
        async with self._db.connection() as conn:
            return await operations.queue_stats(conn, self.settings.schema, queues, time.time())

    async def dead_letters(
        self, queue: str, *, limit: int = 100, after: str | None = None
    ) -> list[DeadLetter]:
        async with self._db.connection() as conn:
            return await operations.dead_letters(conn, self.settings.schema, queue, limit, after)

    can_run_now = True

    async def run_now(self, queue: str, job_id: str) -> bool:
        async with self._db.connection() as conn:
            return await operations.run_now(
                conn, self.settings.schema, self.sql.channel, queue, job_id, time.time()
            )

    async def dead_letter(self, queue: str, job_id: str) -> DeadLetter | None:
        async with self._db.connection() as conn:
            return await operations.dead_letter(conn, self.settings.schema, queue, job_id)

    async def purge_dead(self, queue: str, ids: Sequence[str] | None = None) -> int:
        async with self._db.connection() as conn:
            return await operations.purge_dead(conn, self.settings.schema, queue, ids)

    async def purge_queue(self, queue: str, *, limit: int = 1000) -> int:
        async with self._db.transaction() as conn:
            cancelled = await operations.purge_queue(
                conn, self.settings.schema, queue, limit, time.time(), self.result_ttl
            )
            await delivery.notify_finished(conn, self.sql, cancelled)
        self._store.wake_finished(cancelled)
        return len(cancelled)

    async def remove_queue(self, queue: str) -> None:
        async with self._db.connection() as conn:
            await operations.remove_queue(conn, self.settings.schema, queue)
        self._known_queues.discard(queue)

    async def list_jobs(
        self, queue: str, status: JobStatus, *, limit: int = 100, after: str | None = None
    ) -> list[JobListing]:
        async with self._db.connection() as conn:
            return await operations.list_jobs(
                conn, self.settings.schema, queue, status, limit, after
            )
