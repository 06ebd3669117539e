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
from asyncq.records import DeadLetter, JobListing, JobStatus, QueueStats
from asyncq.store import JobStore

from . import blocking, jobstore, listing, mover, scripts
from .jobstore import GROUP, StreamJobStore
from .records import Call, QueueKeys, RedisStore, settle_chunks
from .settings import RedisSettings
from .wire import Wire

__all__ = ["RedisBackend"]

_SCRIPTS = {
    "ENQUEUE": scripts.ENQUEUE,
    "TAKE": scripts.TAKE,
    "SETTLE": scripts.SETTLE,
    "PROMOTE": mover.PROMOTE,
    "RENEW": scripts.RENEW,
    "STATS": scripts.STATS,
    "PURGE": scripts.PURGE,
    "INFO": jobstore.INFO,
    "CANCEL": jobstore.CANCEL,
    "LIST": listing.LIST,
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
        self._ttl_ms = max(int(settings.result_ttl * 1000), 1)
        self._redis = RedisStore(
            settings.connection,
            prefix=settings.prefix,
            scripts=_SCRIPTS,
            max_connections=settings.max_connections,
            owner="the Redis backend",
        )
        self._records = StreamJobStore(self._redis, prefix=settings.prefix, ttl_ms=self._ttl_ms)
        self._reader: Wire | None = None
        self._errors = self._redis.errors
        self._run_scripts = self._redis.run
        self._k = self._records.keys
        self._groups: set[str] = set()
        self._reclaim_idle_ms = str(max(int(settings.visibility_timeout * 1000), 1))
        self._reclaim_due: dict[str, float] = {}
        self._reclaim_cursor: dict[str, str] = {}
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
        # The worker's blocking reads get a connection of their own (see blocking.py).
        self._reader = Wire(self._redis.client, timed=False)
        # A job's body is one argument of a script call: the server refuses one larger
        # than its proto-max-bulk-len, so that is the most the URL may ask for.
        server = await self._redis.bulk_limit()
        asked = self.settings.max_message_size
        self.max_message_size = server if asked is None else min(asked, server)

    async def close(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            await reader.close()
        await self._redis.close()

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
            args: list[Any] = [keys.base, now]
            for env in jobs:
                eta = "" if env.eta is None else repr(env.eta)
                args += [env.id, env.body, env.task, eta, env.key or ""]
            return ("ENQUEUE", [keys.stream, keys.scheduled], args)

        with self._errors("enqueueing"):
            return await self._redis.run_chunked(envelopes, self._k, call, bytes.decode)

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
        for q, count in shares:
            keys = self._k(q)
            reclaim = self._reclaim_idle_ms if mono >= self._reclaim_due.get(q, 0.0) else ""
            cursor = self._reclaim_cursor.get(q, "0-0")
            args = [GROUP, self._consumer, count, keys.base, now, self._ttl_ms, reclaim, cursor]
            calls.append(("TAKE", [keys.stream], args))
        try:
            replies = await self._run_scripts(calls)
        except rx.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            self._groups.clear()  # Redis lost its data (a restart without persistence)
            await self._ensure_groups(queues)
            replies = await self._run_scripts(calls)
        deliveries = []
        for (q, count), (cursor, pending, rows) in zip(shares, replies, strict=True):
            if pending >= 0:  # this call looked for abandoned entries
                self._reclaim_cursor[q] = cursor.decode()
                self._reclaim_due[q] = mono + self._next_look(pending, rows, count)
            deliveries += [
                Delivery(job_id.decode(), q, body, entry, bool(redelivered))
                for entry, job_id, body, redelivered in rows
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
        if wait <= 0:
            return []
        streams = {self._k(q).stream: ">" for q in queues}
        if self._reader is None:
            raise BrokerError("the Redis backend is not connected: open the App first")
        read = await blocking.read_group(
            self._reader,
            GROUP,
            self._consumer,
            streams,
            count=limit if len(queues) == 1 else 1,
            block=wait,
            grace=self.settings.socket_timeout,
        )
        if not read:
            return []
        # Fresh entries need no admission step (see scripts.py): they run as delivered.
        by_stream = {self._k(q).stream: q for q in queues}
        deliveries = [
            Delivery(fields.get(b"id", entry).decode(), q, fields.get(b"body", b""), entry)
            for stream, entries in read
            for q in (by_stream[stream.decode()],)
            for entry, fields in entries
        ]
        if len(deliveries) > limit:  # several queues woke at once: give the extra back
            with anyio.CancelScope(shield=True):
                await self.settle([Settlement(d, Outcome.RELEASE) for d in deliveries[limit:]])
            deliveries = deliveries[:limit]
        return deliveries

    async def settle(self, settlements: Sequence[Settlement]) -> None:
        now, ttl = repr(time.time()), self._ttl_ms
        calls = []
        for keys, chunk in settle_chunks(settlements, self._k):
            args: list[Any] = [GROUP, self._consumer, keys.base, now, ttl]
            for s in chunk:
                args += scripts.settle_args(s)
            calls.append(("SETTLE", [keys.stream, keys.scheduled, keys.dead], args))
        with self._errors("settling jobs"):
            await self._run_scripts(calls)

    async def renew(self, deliveries: Sequence[Delivery]) -> None:
        by_queue: dict[str, list[Any]] = defaultdict(list)
        for d in deliveries:
            by_queue[d.queue].append(d.receipt)
        calls = [
            ("RENEW", [self._k(q).stream], [GROUP, self._consumer, *entries])
            for q, entries in by_queue.items()
        ]
        with self._errors("renewing leases"):
            await self._run_scripts(calls)

    async def maintain(self, queues: Sequence[str]) -> None:
        """Move due delayed jobs and retries into their streams (see mover.py)."""
        await mover.move_due_jobs(self._redis, [self._k(q) for q in queues])

    # -- operations ------------------------------------------------------------------------
    async def queue_stats(self, queues: Sequence[str] | None = None) -> list[QueueStats]:
        with self._errors("reading queue stats"):
            if queues is None:
                queues = await self._redis.registered()
            calls = []
            for q in queues:
                keys = self._k(q)
                calls.append(("STATS", [keys.stream, keys.scheduled, keys.dead], [GROUP]))
            replies = await self._run_scripts(calls)
        return [
            QueueStats(q, max(length - running, 0), scheduled, running, dead)
            for q, (length, running, scheduled, dead) in zip(queues, replies, strict=True)
        ]

    async def dead_letters(
        self, queue: str, *, limit: int = 100, after: str | None = None
    ) -> list[DeadLetter]:
        start = "-" if after is None else f"({after}"
        with self._errors("listing dead letters"):
            entries: Any = await self.client.xrange(self._k(queue).dead, start, "+", count=limit)
        return [listing.dead_letter(queue, entry, fields) for entry, fields in entries]

    async def list_jobs(
        self, queue: str, status: JobStatus, *, limit: int = 100, after: str | None = None
    ) -> list[JobListing]:
        return await listing.list_jobs(
            self._redis, self._k(queue), queue, status, limit=limit, after=after
        )

    async def purge_dead(self, queue: str, ids: Sequence[str] | None = None) -> int:
        dead = self._k(queue).dead
        with self._errors("purging dead letters"):
            if ids is None:
                pipe = self.client.pipeline(transaction=True)
                pipe.xlen(dead)
                pipe.delete(dead)
                count, _ = await pipe.execute()
                return int(count)
            wanted, doomed = {i.encode() for i in ids}, []
            start = "-"
            while True:
                page: Any = await self.client.xrange(dead, start, "+", count=1000)
                for entry, fields in page:
                    job_id = fields.get(b"id")
                    if job_id in wanted:
                        wanted.discard(job_id)  # the oldest entry of each job only
                        doomed.append(entry)
                if len(page) < 1000:
                    break
                start = f"({page[-1][0].decode()}"
            return int(await self.client.xdel(dead, *doomed)) if doomed else 0

    async def purge_queue(self, queue: str, *, limit: int = 1000) -> int:
        keys = self._k(queue)
        args = [keys.base, GROUP, repr(time.time()), self._ttl_ms, limit]
        with self._errors("purging a queue"):
            (purged,) = await self._run_scripts([("PURGE", [keys.stream, keys.scheduled], args)])
        return int(purged)

    async def remove_queue(self, queue: str) -> None:
        keys = self._k(queue)
        with self._errors("removing a queue"):
            await self._redis.unregister(queue, keys.stream, keys.scheduled, keys.dead)
        self._groups.discard(queue)
