"""The ``sqlite://`` backend: the whole contract in one SQLite file (stdlib ``sqlite3``, WAL
mode), shared by every process of one host that names it, with no server.

Producers and workers in different processes meet in the file; what one commits the others
see at their next look at it (see :mod:`.watch`), and within one process at once. A job is
taken by a worker in one write transaction (``UPDATE ... RETURNING``) and stays RUNNING,
leased for ``visibility_timeout`` and renewed while its worker lives, until the worker
settles it: a worker killed mid-job leaves its lease to run out, and the next fetch of any
worker takes the job back (``redelivered=True``). The file survives a crash of any process
(``synchronous=normal``) or a power loss (``synchronous=full``).

The file must be on a local filesystem: SQLite's locks do not work over NFS or SMB.
Options: see :mod:`.settings`.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Sequence
from typing import Self

import anyio
import anyio.lowlevel

from ..backend import Backend
from ..coalescing import Coalescer
from ..delivery import Delivery, Envelope
from ..records import (
    DeadLetter,
    JobListing,
    JobStatus,
    MinuteCounts,
    QueueStats,
    TrimmedDeadLetters,
)
from ..settlement import Settlement
from ..store import JobStore
from ..throughput import KEPT, MINUTE, minute_of
from . import delivery, operations, upkeep
from .database import Database
from .settings import SqliteSettings
from .store import SqliteStore

__all__ = ["SqliteBackend"]

log = logging.getLogger("asyncq.sqlite")

UPKEEP_INTERVAL = 1.0
"""Seconds between two rounds of a worker's upkeep (expired records, stale limit state)."""


_PROBE_EVERY = 8
"""While enqueues come alone, one send in this many waits a turn for company."""


def _body_size(envelope: Envelope) -> int:
    return len(envelope.body)


class SqliteBackend(Backend):
    """asyncq's semantics in one SQLite file."""

    system = "sqlite"

    def __init__(self, settings: SqliteSettings) -> None:
        self.settings = settings
        self.path = settings.path
        self.visibility_timeout = settings.visibility_timeout
        self.result_ttl = settings.result_ttl
        self.lease_renewal_interval = settings.visibility_timeout / 3
        self.dead_ttl, self.dead_max = settings.dead_ttl, settings.dead_max
        self.max_message_size = settings.max_message_size
        self._db = Database(settings)
        self._store = SqliteStore(self._db, settings.result_ttl)
        self._watch = self._store.watch
        self._db.on_sibling_commit = self._watch.poke
        self._enqueues: Coalescer[Envelope, str] = Coalescer(
            self._send_jobs, weight=_body_size, gather=self._gather
        )
        self._turn = 0
        self._sends = 0
        self._known_queues: set[str] = set()
        """The queues this backend has put in the ``queues`` table (a queue removed by
        another process comes back in the listing through its live jobs)."""
        self._company = False
        """Whether other enqueues were waiting when the last batch went out."""

    @classmethod
    def from_url(cls, url: str) -> Self:
        return cls(SqliteSettings.from_url(url))

    @property
    def store(self) -> JobStore:
        return self._store

    async def connect(self) -> None:
        await self._db.open()
        self._watch.start()
        log.debug("sqlite broker: %s", self.path)

    async def close(self) -> None:
        await self._db.close()

    def describe(self) -> str:
        """Where the broker is, for a worker's start and ``asyncq stats``."""
        return f"the sqlite file {self.path}"

    # -- producing -------------------------------------------------------------------------
    async def enqueue(self, envelopes: Sequence[Envelope]) -> list[str]:
        return await self._enqueues.submit(envelopes)

    def _gather(self) -> bool:
        """Whether an enqueue that finds no other in flight waits a turn of the event loop
        for company: a transaction runs without yielding, so only then can concurrent
        enqueues share its commit (a hundred callers share a few). A lone caller would only
        pay for the wait, so while batches go out alone one send in _PROBE_EVERY waits, to
        notice company when it comes."""
        self._sends += 1
        return self._company or not self._sends % _PROBE_EVERY

    async def _send_jobs(self, envelopes: Sequence[Envelope]) -> list[str]:
        self._company = len(envelopes) > 1 or self._enqueues.waiting()
        known = self._known_queues
        ids = await self._db.write(
            lambda conn: delivery.enqueue(conn, envelopes, time.time(), known)
        )
        known.update(env.queue for env in envelopes)  # committed: known from now on
        self._watch.changed()
        return ids

    # -- consuming -------------------------------------------------------------------------
    async def fetch(
        self, queues: Sequence[str], limit: int, *, timeout: float | None
    ) -> list[Delivery]:
        deadline = None if timeout is None else time.monotonic() + timeout
        if len(queues) > 1:
            # Start from a different queue each time so a busy queue cannot starve the rest.
            self._turn = (self._turn + 1) % len(queues)
            queues = [*queues[self._turn :], *queues[: self._turn]]
        while True:
            change = self._watch.next_change()
            ready, wake_at = await self._db.read(lambda conn: delivery.next_wake(conn, queues))
            now = time.time()
            if ready or (wake_at is not None and wake_at <= now):
                claim = await self._db.write(
                    lambda conn: delivery.claim(
                        conn, queues, limit, time.time(), self.visibility_timeout, self.result_ttl
                    )
                )
                if claim.cancelled:
                    self._store.wake_finished(claim.cancelled)
                if claim.deliveries:
                    return claim.deliveries
                continue
            wait = None if wake_at is None else wake_at - now
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return []
                wait = remaining if wait is None else min(wait, remaining)
            await self._watch.until(change, wait)

    async def settle(self, settlements: Sequence[Settlement]) -> None:
        now = time.time()
        finished = await self._db.write(
            lambda conn: delivery.settle(conn, settlements, now, self.result_ttl)
        )
        self._store.wake_finished(finished)
        self._watch.changed()

    counts_minutes = True

    async def minute_counts(self, queues: Sequence[str], minutes: int) -> list[MinuteCounts]:
        if not queues:
            return []
        now = time.time()
        since = max(minute_of(now) - (minutes - 1) * MINUTE, now - KEPT)
        marks = ", ".join("?" * len(queues))
        rows = await self._db.read(
            lambda conn: conn.execute(
                f"SELECT queue, minute, succeeded, failed FROM minute_counts "
                f"WHERE queue IN ({marks}) AND minute >= ? ORDER BY minute, queue",
                (*queues, since),
            ).fetchall()
        )
        return [MinuteCounts(*row) for row in rows]

    async def renew(self, deliveries: Sequence[Delivery]) -> None:
        lease_until = time.time() + self.visibility_timeout
        await self._db.write(lambda conn: delivery.renew(conn, deliveries, lease_until))

    async def maintain(self, queues: Sequence[str]) -> None:
        while True:
            await anyio.sleep(UPKEEP_INTERVAL)
            expire = functools.partial(upkeep.expire_jobs, now=time.time())
            while await self._db.write(expire) >= upkeep.EXPIRE_BATCH:
                await anyio.lowlevel.checkpoint()
            await self._db.write(functools.partial(upkeep.sweep, now=time.time()))

    async def trim_dead(self, queues: Sequence[str]) -> list[TrimmedDeadLetters]:
        cutoff = None if self.dead_ttl is None else time.time() - self.dead_ttl
        return await self._db.write(
            lambda conn: operations.trim_dead(conn, queues, cutoff, self.dead_max)
        )

    # -- operations ------------------------------------------------------------------------
    async def queue_stats(self, queues: Sequence[str] | None = None) -> list[QueueStats]:
        return await self._db.read(lambda conn: operations.queue_stats(conn, queues, time.time()))

    async def dead_letters(
        self, queue: str, *, limit: int = 100, after: str | None = None
    ) -> list[DeadLetter]:
        return await self._db.read(lambda conn: operations.dead_letters(conn, queue, limit, after))

    can_run_now = True

    async def run_now(self, queue: str, job_id: str) -> bool:
        now = time.time()
        moved = await self._db.write(lambda conn: operations.run_now(conn, queue, job_id, now))
        if moved:
            self._watch.changed()
        return moved

    async def dead_letter(self, queue: str, job_id: str) -> DeadLetter | None:
        return await self._db.read(lambda conn: operations.dead_letter(conn, queue, job_id))

    async def purge_dead(self, queue: str, ids: Sequence[str] | None = None) -> int:
        return await self._db.write(lambda conn: operations.purge_dead(conn, queue, ids))

    async def purge_queue(self, queue: str, *, limit: int = 1000) -> int:
        cancelled = await self._db.write(
            lambda conn: operations.purge_queue(conn, queue, limit, time.time(), self.result_ttl)
        )
        self._store.wake_finished(cancelled)
        return len(cancelled)

    async def remove_queue(self, queue: str) -> None:
        await self._db.write(lambda conn: operations.remove_queue(conn, queue))
        self._known_queues.discard(queue)

    async def list_jobs(
        self, queue: str, status: JobStatus, *, limit: int = 100, after: str | None = None
    ) -> list[JobListing]:
        return await self._db.read(
            lambda conn: operations.list_jobs(conn, queue, status, limit, after)
        )
