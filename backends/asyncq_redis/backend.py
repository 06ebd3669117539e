"""asyncq on Redis Streams: one stream and consumer group per queue, a sorted set for
delayed jobs and retries, a stream per dead-letter queue, a hash per job record.

Delivery is XREADGROUP (blocking when idle, so a new job starts within milliseconds);
acknowledgement is XACK + XDEL in the same script that stores the outcome, so the stream
does not grow. A worker that dies leaves its entries pending; once they sit idle past the
visibility timeout a live worker's fetch takes them over with XAUTOCLAIM, looking every
RECLAIM_INTERVAL while the group has pending entries (every visibility timeout while it has
none), each look going on from where the last one stopped. Live workers keep their entries
fresh with XCLAIM ... JUSTID. Every state change is one Lua script (see scripts.py), and
batches travel as one pipelined round trip. Job records, cancellations and heartbeats are
kept through the record layer (records/; the backend's JobStore is jobstore.py).

Priorities: the queue's stream holds priority 0, and each priority above 0 that was ever
used has a stream of its own (scripts.py); a fetch's TAKE reads the set of those
priorities on the server, takes from the highest down, and answers with the set, so the
worker knows which streams its blocking read must cover. A queue that never had a
priority costs nothing more: one stream, one blocking read on it. When a queue gets a
stream for a new priority, its enqueue announces it on the queue's wake channel; the
mover (``maintain``) hears it and ends a blocking read that does not cover it, so the
worker takes the new job at once. Priorities are strict: while higher ones have ready
jobs, lower ones wait.
"""

from __future__ import annotations

import os
import socket
import time
from collections import defaultdict
from collections.abc import Sequence
from typing import Any, Self

import anyio
import redis.asyncio as aioredis
from redis import exceptions as rx

from asyncq.backend import Backend, Delivery, Envelope, Outcome, Settlement
from asyncq.coalescing import Coalescer
from asyncq.errors import BrokerError
from asyncq.records import (
    DeadLetter,
    JobListing,
    JobStatus,
    MinuteCounts,
    QueueStats,
    TrimmedDeadLetters,
)
from asyncq.store import JobStore

from . import blocking, dead_letters, jobstore, listing, mover, queue_scripts, retention, scripts
from .jobstore import GROUP, StreamJobStore
from .persistence import log_persistence, read_persistence
from .records import (
    STORE_SCRIPTS,
    Call,
    QueueKeys,
    RedisStore,
    count_calls,
    kept_minute_keys,
    read_minute_counts,
)
from .settings import RedisSettings

__all__ = ["RedisBackend"]

_SCRIPTS = {
    "ENQUEUE": scripts.ENQUEUE,
    "TAKE": scripts.TAKE,
    "SETTLE": scripts.SETTLE,
    "PROMOTE": mover.PROMOTE,
    "RENEW": scripts.RENEW,
    "STATS": queue_scripts.STATS,
    "PURGE": queue_scripts.PURGE,
    "RUN_NOW": queue_scripts.RUN_NOW,
    "INFO": jobstore.INFO,
    "BODY": jobstore.BODY,
    "CANCEL": jobstore.CANCEL,
    "LIST": listing.LIST,
    "TRIM_DEAD": retention.TRIM_DEAD,
    **STORE_SCRIPTS,
}


def _body_size(envelope: Envelope) -> int:
    return len(envelope.body)


RECLAIM_INTERVAL = 0.5
"""Seconds between looks for abandoned entries while a queue has pending ones: a lost
worker's job restarts within this of its lease running out."""


class RedisBackend(Backend):
    """The asyncq contract on Redis Streams (Redis >= 6.2)."""

    system = "redis"

    def __init__(self, settings: RedisSettings) -> None:
        self.settings = settings
        self.lease_renewal_interval = settings.visibility_timeout / 3
        self.dead_ttl, self.dead_max = settings.dead_ttl, settings.dead_max
        self._ttl_ms = max(int(settings.result_ttl * 1000), 1)
        self._redis = RedisStore(
            settings.connection,
            prefix=settings.prefix,
            scripts=_SCRIPTS,
            max_connections=settings.max_connections,
            owner="the Redis backend",
        )
        self._records = StreamJobStore(self._redis, prefix=settings.prefix, ttl_ms=self._ttl_ms)
        self._readers = blocking.Readers(cluster=settings.cluster)
        self._connected = False
        self._wait = (
            None
            if settings.wait_replicas is None
            else (settings.wait_replicas, max(int(settings.wait_timeout * 1000), 1))
        )
        self._errors = self._redis.errors
        self._run_scripts = self._redis.run
        self._k = self._records.keys
        self._groups: set[str] = set()
        self._reclaim_idle_ms = str(max(int(settings.visibility_timeout * 1000), 1))
        self._reclaim_due: dict[str, float] = {}
        self._reclaim_cursor: dict[str, dict[str, str]] = {}
        """Per queue, where the last look for abandoned entries stopped, per priority."""
        self._levels: dict[str, tuple[int, ...]] = {}
        """Per queue, its priorities above 0 (highest first), as its last TAKE found them."""
        self._levels_stale = False
        """A queue got a new priority since the last TAKE: take again before blocking."""
        self._blocking: anyio.CancelScope | None = None
        self._turn = 0
        self._consumer = f"{socket.gethostname()}:{os.getpid()}:{os.urandom(4).hex()}"
        # Enqueues in flight together share one pipelined round trip.
        self._enqueues = Coalescer(self._send_jobs, weight=_body_size)

    @property
    def store(self) -> JobStore:
        return self._records

    @classmethod
    def from_url(cls, url: str) -> Self:
        return cls(RedisSettings.from_url(url))

    # -- connection ------------------------------------------------------------------------
    async def connect(self) -> None:
        await self._redis.connect()
        self._connected = True
        # A job's body is one argument of a script call: the server refuses one larger
        # than its proto-max-bulk-len, so that is the most the URL may ask for.
        server = await self._redis.bulk_limit()
        asked = self.settings.max_message_size
        self.max_message_size = server if asked is None else min(asked, server)

    async def close(self) -> None:
        self._connected = False
        await self._readers.close()
        await self._redis.close()

    async def on_worker_start(self) -> None:
        # Only a worker is told: a producer-only App opening this Redis checks nothing.
        log_persistence(await read_persistence(self._redis.client), self._redis.where)

    @property
    def client(self) -> aioredis.Redis:
        return self._redis.client

    async def _ensure_groups(self, queues: Sequence[str]) -> None:
        new = [q for q in queues if q not in self._groups]
        if not new:
            return
        pipe = self.client.pipeline(transaction=False)
        for q in new:
            # From id 0: jobs enqueued before any worker existed are delivered too.
            pipe.xgroup_create(self._k(q).stream, GROUP, id="0", mkstream=True)
            pipe.sadd(self._redis.queues_key, q)
        for reply in await pipe.execute(raise_on_error=False):
            if isinstance(reply, Exception) and "BUSYGROUP" not in str(reply):
                raise reply
        self._groups.update(new)

    # -- producing -------------------------------------------------------------------------
    async def enqueue(self, envelopes: Sequence[Envelope]) -> list[str]:
        return await self._enqueues.submit(envelopes)

    async def _send_jobs(self, envelopes: Sequence[Envelope]) -> list[str]:
        now = repr(time.time())

        def call(keys: QueueKeys, jobs: Sequence[Envelope]) -> Call:
            priority = jobs[0].priority  # a chunk's jobs share their priority
            args: list[Any] = [keys.base, now, priority, GROUP]
            for env in jobs:
                eta = "" if env.eta is None else repr(env.eta)
                args += [env.id, env.body, env.task, eta, env.key or ""]
            return ("ENQUEUE", [keys.stream_at(priority), keys.scheduled, keys.levels], args)

        with self._errors("enqueueing"):
            return await self._redis.run_chunked(
                envelopes, self._k, call, bytes.decode, by_priority=True, wait=self._wait
            )

    # -- consuming -------------------------------------------------------------------------
    async def fetch(
        self, queues: Sequence[str], limit: int, *, timeout: float | None
    ) -> list[Delivery]:
        with self._errors("fetching jobs"):
            await self._ensure_groups(queues)
            # Once Redis has handed entries over they are this worker's: a cancellation
            # must not drop the reply, or they would sit unseen until reclaimed.
            with anyio.CancelScope(shield=True):
                deliveries = await self._take(queues, limit)
            if deliveries or timeout == 0:
                return deliveries
            return await self._wait_and_take(queues, limit, timeout)

    def _shares(self, queues: Sequence[str], limit: int) -> list[tuple[str, int]]:
        """Split ``limit`` over the queues, starting at a different one each time so a busy
        queue cannot starve the rest, and never asking for more than ``limit`` in all."""
        n = len(queues)
        if n == 1:
            return [(queues[0], limit)]
        self._turn = (self._turn + 1) % n
        base, extra = divmod(limit, n)
        order = [*queues[self._turn :], *queues[: self._turn]]
        return [(q, base + (i < extra)) for i, q in enumerate(order) if base + (i < extra)]

    async def _take(self, queues: Sequence[str], limit: int) -> list[Delivery]:
        now, mono = repr(time.time()), time.monotonic()
        calls = []
        shares = self._shares(queues, limit)
        self._levels_stale = False  # what this TAKE answers is news enough
        for q, count in shares:
            keys = self._k(q)
            reclaim = self._reclaim_idle_ms if mono >= self._reclaim_due.get(q, 0.0) else ""
            args = [GROUP, self._consumer, count, keys.base, now, self._ttl_ms, reclaim]
            for level, cursor in self._reclaim_cursor.get(q, {}).items():
                args += [level, cursor]
            calls.append(("TAKE", [keys.stream, keys.levels], args))
        try:
            replies = await self._run_scripts(calls)
        except rx.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            self._groups.clear()  # Redis lost its data (a restart without persistence)
            await self._ensure_groups(queues)
            replies = await self._run_scripts(calls)
        deliveries = []
        for (q, count), (cursors, pending, rows, levels) in zip(shares, replies, strict=True):
            if pending >= 0:  # this call looked for abandoned entries
                looked = self._reclaim_cursor.setdefault(q, {})
                for i in range(0, len(cursors), 2):
                    looked[cursors[i].decode()] = cursors[i + 1].decode()
                self._reclaim_due[q] = mono + self._next_look(pending, rows, count)
            self._levels[q] = tuple(int(level) for level in levels)
            deliveries += [
                Delivery(job_id.decode(), q, body, entry, bool(redelivered), int(level))
                for entry, job_id, body, redelivered, level in rows
            ]
        return deliveries

    def _next_look(self, pending: int, rows: list[Any], count: int) -> float:
        """Seconds until the next look for abandoned entries. While the group has pending
        entries, any of them may be a lost worker's, idle past the visibility timeout at any
        moment: look every RECLAIM_INTERVAL. With none pending, none can be reclaimable
        before a whole visibility timeout has passed. A look that filled every free slot
        may have left more: look again at once."""
        if sum(1 for row in rows if row[3]) >= count:
            return 0.0
        return RECLAIM_INTERVAL if pending else self.settings.visibility_timeout

    async def _wait_and_take(
        self, queues: Sequence[str], limit: int, timeout: float | None
    ) -> list[Delivery]:
        # Block until an entry arrives (XADD wakes us at once). The wait ends when the next
        # look for abandoned entries is due, since those arrive without any XADD.
        mono = time.monotonic()
        wait = min(self._reclaim_due.get(q, mono) for q in queues) - mono
        if timeout is not None:
            wait = min(wait, timeout)
        if wait <= 0 or self._levels_stale:
            return []
        # Every stream of the queues, as the last TAKE found them, the highest priority first.
        by_stream: dict[str, tuple[str, int]] = {}
        for q in queues:
            keys = self._k(q)
            for level in (*self._levels.get(q, ()), 0):
                by_stream[keys.stream_at(level)] = (q, level)
        if not self._connected:
            raise BrokerError("the Redis backend is not connected: open the App first")
        read: blocking.Entries = []
        with anyio.CancelScope() as self._blocking:
            read = await self._readers.read(
                self._redis.client,
                GROUP,
                self._consumer,
                list(by_stream),
                count=limit if len(by_stream) == 1 else 1,
                block=wait,
                grace=self.settings.socket_timeout,
            )
        self._blocking = None
        if not read:
            return []
        # Fresh entries need no admission step (see scripts.py): they run as delivered.
        deliveries = [
            Delivery(
                fields.get(b"id", entry).decode(), q, fields.get(b"body", b""), entry, False, level
            )
            for stream, entries in read
            for q, level in (by_stream[stream.decode()],)
            for entry, fields in entries
        ]
        if len(deliveries) > limit:
            # Several streams woke at once: keep the highest priorities, give the rest back.
            deliveries.sort(key=lambda d: -d.priority)
            with anyio.CancelScope(shield=True):
                await self.settle([Settlement(d, Outcome.RELEASE) for d in deliveries[limit:]])
            deliveries = deliveries[:limit]
        return deliveries

    async def settle(self, settlements: Sequence[Settlement]) -> None:
        now, ttl = repr(time.time()), self._ttl_ms
        calls = []
        # One call per stream: a delivery's entry is in the stream of its priority.
        for (keys, priority), chunk in scripts.settle_chunks(settlements, self._k):
            args: list[Any] = [GROUP, self._consumer, keys.base, now, ttl]
            for s in chunk:
                args += scripts.settle_args(s)
            stream = keys.stream_at(priority)
            calls.append(("SETTLE", [stream, keys.scheduled, keys.dead, keys.deferred], args))
        calls += count_calls(settlements, self._k, float(now))
        with self._errors("settling jobs"):
            await self._run_scripts(calls)

    counts_minutes = True

    async def minute_counts(self, queues: Sequence[str], minutes: int) -> list[MinuteCounts]:
        return await read_minute_counts(self._redis, self._k, queues, minutes)

    async def renew(self, deliveries: Sequence[Delivery]) -> None:
        by_stream: dict[tuple[str, int], list[Any]] = defaultdict(list)
        for d in deliveries:
            by_stream[d.queue, d.priority].append(d.receipt)
        calls = [
            ("RENEW", [self._k(q).stream_at(priority)], [GROUP, self._consumer, *entries])
            for (q, priority), entries in by_stream.items()
        ]
        with self._errors("renewing leases"):
            await self._run_scripts(calls)

    async def maintain(self, queues: Sequence[str]) -> None:
        """Move due delayed jobs and retries into their streams (see mover.py)."""
        await mover.move_due_jobs(self._redis, [self._k(q) for q in queues], self._new_level)

    def _new_level(self, queue: str) -> None:
        """``queue`` has a stream for a new priority: a blocking read that does not cover
        it ends, and the next fetch's TAKE finds it."""
        if queue in self._levels:  # a queue this worker serves (others are not its concern)
            self._levels_stale = True
            if self._blocking is not None:
                # Its reply is dropped with its connection. In the rare case that an entry
                # was handed over just then, it stays pending to this worker until the
                # visibility timeout hands it on: late, never lost.
                self._blocking.cancel()

    async def trim_dead(self, queues: Sequence[str]) -> list[TrimmedDeadLetters]:
        if self.dead_ttl is None and self.dead_max is None:
            return []
        calls = retention.trim_calls([self._k(q) for q in queues], self.dead_ttl, self.dead_max)
        with self._errors("trimming dead letters"):
            replies = await self._run_scripts(calls)
        return retention.trimmed(queues, replies)

    # -- operations ------------------------------------------------------------------------
    async def queue_stats(self, queues: Sequence[str] | None = None) -> list[QueueStats]:
        with self._errors("reading queue stats"):
            if queues is None:
                queues = await self._redis.registered()
            calls = []
            for q in queues:
                keys = self._k(q)
                stats_keys = [keys.stream, keys.scheduled, keys.dead, keys.levels, keys.deferred]
                calls.append(("STATS", stats_keys, [GROUP]))
            replies = await self._run_scripts(calls)
        # A job waiting on a limit is in the scheduled set, yet queued: counted as pending.
        return [
            QueueStats(
                q,
                max(length - running, 0) + deferred,
                scheduled - deferred,
                running,
                dead,
                age_ms / 1000,
            )
            for q, (length, running, scheduled, dead, age_ms, deferred) in zip(
                queues, replies, strict=True
            )
        ]

    async def dead_letters(
        self, queue: str, *, limit: int = 100, after: str | None = None
    ) -> list[DeadLetter]:
        start = "-" if after is None else f"({after}"
        with self._errors("listing dead letters"):
            entries: Any = await self.client.xrange(self._k(queue).dead, start, "+", count=limit)
        return [listing.dead_letter(queue, entry, fields) for entry, fields in entries]

    can_run_now = True

    async def run_now(self, queue: str, job_id: str) -> bool:
        keys = self._k(queue)
        with self._errors("moving a job forward"):
            (moved,) = await self._run_scripts([("RUN_NOW", [keys.scheduled], [keys.base, job_id])])
        return bool(moved)

    async def dead_letter(self, queue: str, job_id: str) -> DeadLetter | None:
        with self._errors("reading dead letters"):
            return await dead_letters.newest_of(self.client, self._k(queue).dead, queue, job_id)

    async def list_jobs(
        self, queue: str, status: JobStatus, *, limit: int = 100, after: str | None = None
    ) -> list[JobListing]:
        return await listing.list_jobs(
            self._redis, self._k(queue), queue, status, limit=limit, after=after
        )

    async def purge_dead(self, queue: str, ids: Sequence[str] | None = None) -> int:
        with self._errors("purging dead letters"):
            return await dead_letters.purge(self.client, self._k(queue).dead, ids)

    async def purge_queue(self, queue: str, *, limit: int = 1000) -> int:
        keys = self._k(queue)
        args = [keys.base, GROUP, repr(time.time()), self._ttl_ms, limit]
        with self._errors("purging a queue"):
            purge_keys = [keys.stream, keys.scheduled, keys.levels, keys.deferred]
            (purged,) = await self._run_scripts([("PURGE", purge_keys, args)])
        return int(purged)

    async def remove_queue(self, queue: str) -> None:
        keys = self._k(queue)
        with self._errors("removing a queue"):
            levels: Any = await self.client.smembers(keys.levels)
            streams = [keys.stream_at(int(level)) for level in levels]
            doomed = [keys.stream, *streams, keys.levels, keys.scheduled, keys.deferred, keys.dead]
            doomed += kept_minute_keys(keys)
            await self._redis.unregister(queue, *doomed)
        self._groups.discard(queue)
        self._levels.pop(queue, None)
        self._reclaim_cursor.pop(queue, None)
