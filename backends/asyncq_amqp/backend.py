"""asyncq on RabbitMQ (AMQP 0-9-1, aio-pika): durable work queues with late acks and
publisher confirms, delays through TTL wait queues, a dead-letter queue per queue, and
job records in the store ``records=`` names, if any.

:class:`AmqpBackend` is a facade over parts of one job each:

=================  ============================================================
connection.py      the connection, the publishing channel, one-off channels
receiver.py        the consume connection: asyncq's own small AMQP client
topology.py        declaring the queues and waits, routing a job to its next stop
publisher.py       publishing with confirms (fastpath.py: the aiormq fast path)
fetcher.py         consuming and admission; consumer.py: one receiver's consumers
settling.py        what each outcome becomes on RabbitMQ and in the records
mover.py           the delayed-job mover, a worker's upkeep
dead_letters.py    writing, reading and purging dead letters (browse.py)
queues.py          queue depths, purge and removal; listing.py: ``list_jobs``
jobstore.py        the JobStore over the records (records.py), or a MissingStore
=================  ============================================================

Producing: with a record store, the job's record is stored (which claims its idempotency
key) and its message published with a confirm; a batch waits for all its confirms at
once. A message the broker refuses is taken back out of the records and reported.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar, Self

import anyio

from asyncq.backend import Backend, Delivery, Envelope, Settlement
from asyncq.coalescing import Coalescer
from asyncq.errors import BrokerError, ConfigurationError
from asyncq.records import (
    DeadLetter,
    JobListing,
    JobStatus,
    MinuteCounts,
    QueueStats,
    TrimmedDeadLetters,
)
from asyncq.store import JobStore

from .connection import Link
from .consumer_timeout import RAISE_CONSUMER_TIMEOUT
from .dead_letters import DeadLetters
from .errors import QueueFull
from .fastpath import Outgoing
from .fetcher import Fetcher
from .jobstore import AmqpJobStore, CancelRequests, missing_store
from .listing import Listing
from .mover import DelayMover
from .presence import Presence
from .publisher import Publisher, headers
from .queues import Queues
from .record_store import open_records
from .settings import RECORDS_HINT, AmqpSettings
from .settling import Settler
from .topology import QUORUM_HAS_NO_PRIORITIES, Names, Topology

if TYPE_CHECKING:
    from .record_store import JobRecords

__all__ = ["AmqpBackend", "QueueFull"]


def _body_size(envelope: Envelope) -> int:
    return len(envelope.body)


class AmqpBackend(Backend):
    """The asyncq contract on RabbitMQ (3.10 or newer).

    With ``records=`` (a Redis URL) every feature works. Without it RabbitMQ alone
    carries enqueue (with confirms), delivery, retries, delays, dead letters (and
    ``asyncq dlq``), purges, shutdown, tracing and metrics. What needs a record store
    raises ``ConfigurationError`` saying to add ``records=``: ``job.result()``,
    ``status()``, ``info()``, ``cancel()``, an idempotency ``key=`` (at enqueue, nothing
    sent), ``asyncq workers``, and listing running jobs. Also missing without it: the
    admission step, which drops redelivered copies of jobs that already ended (a job whose
    ack was lost runs again), the ``redelivered`` flag's precision (it is RabbitMQ's:
    also set on a job handed back at a shutdown), and other processes' running jobs in
    ``queue_stats`` (only this process's are counted).
    """

    system = "rabbitmq"
    lease_renewal_interval = None  # RabbitMQ holds a delivery for as long as its channel lives
    # A queue declare tells how many messages are ready, not how old the first one is; the
    # management API's head_message_timestamp needs a plugin and a timestamp on every
    # message, and the record store no index of queued jobs by age.
    measures_lag = False
    # A trim opens a channel per queue and reads a message: less often than elsewhere.
    retention_interval = 5.0
    ack_deadline_name: ClassVar[str] = "RabbitMQ's consumer_timeout"

    def __init__(self, settings: AmqpSettings) -> None:
        self.settings = settings
        self.dead_ttl, self.dead_max = settings.dead_ttl, settings.dead_max
        if settings.queue_type == "quorum":
            self.supports_priorities = False
            self.no_priorities_hint = QUORUM_HAS_NO_PRIORITIES
        # ... up to its consumer timeout, though: see consumer_timeout.py.
        self.ack_deadline = settings.consumer_timeout
        self.ack_deadline_hint = RAISE_CONSUMER_TIMEOUT
        records = None
        if settings.records is not None:
            prefix, ttl = f"{settings.prefix}:amqp", settings.result_ttl
            records = open_records(settings.records, prefix=prefix, result_ttl=ttl)
        self.records = records
        self.counts_minutes = records is not None  # the records count, in their settles
        # Without records, each queue's delayed jobs are counted in wait queues of its own.
        self.names = Names(settings.prefix, per_queue_waits=records is None)
        self._link = Link(settings)
        self._heard = CancelRequests()
        self._store: JobStore
        if records is None:
            self._store = missing_store()
        else:
            self._store = AmqpJobStore(records, self._link, Presence(settings.prefix), self._heard)
        self._parts: _Parts | None = None
        self._enqueues: Coalescer[Envelope, str] = Coalescer(self._send_jobs, weight=_body_size)

    @property
    def _open(self) -> _Parts:
        if self._parts is None:
            raise BrokerError("the AMQP backend is not connected: open the App first")
        return self._parts

    @property
    def store(self) -> JobStore:
        return self._store

    @classmethod
    def from_url(cls, url: str) -> Self:
        return cls(AmqpSettings.from_url(url))

    # -- connection ------------------------------------------------------------------------
    async def connect(self) -> None:
        try:
            if self.records is not None:
                await self.records.connect()
            await self._link.open()
        except BaseException:
            # The App is not open: what did connect must not leak.
            with anyio.CancelScope(shield=True):
                await self.close()
            raise
        self.max_message_size = self._link.max_message_size
        self._parts = _Parts(self, self._link, self.names, self.records, self._heard)

    async def close(self) -> None:
        parts, self._parts = self._parts, None
        if parts is not None:
            with anyio.CancelScope(shield=True):
                await parts.fetcher.close()
        try:
            await self._link.close()
        finally:
            if self.records is not None:
                await self.records.close()

    # -- producing -------------------------------------------------------------------------
    async def enqueue(self, envelopes: Sequence[Envelope]) -> list[str]:
        if self.records is None and any(env.key is not None for env in envelopes):
            raise ConfigurationError(f"an idempotency key needs a job record store: {RECORDS_HINT}")
        if not self.supports_priorities and any(env.priority for env in envelopes):
            raise ConfigurationError(
                f"a job with a priority cannot be enqueued: {self.no_priorities_hint}"
            )
        # Enqueues in flight together are published as one batch, its confirms awaited
        # together, with one records round trip; each caller hears of its own jobs' refusals.
        results = await self._enqueues.results(envelopes)
        refused = [r for r in results if isinstance(r, BaseException)]
        if refused:
            first = refused[0]
            if len(envelopes) > 1:
                raise type(first)(f"{first} ({len(refused)} of {len(envelopes)} jobs refused)")
            raise first
        return [r for r in results if not isinstance(r, BaseException)]

    async def _send_jobs(self, envelopes: Sequence[Envelope]) -> list[str | BaseException]:
        """Publish a batch (perhaps several callers' jobs): per job, its id or why the
        broker refused it; a failure of the whole batch raises."""
        records = self.records
        with self._link.errors("declaring queues"):
            await self._open.topology.declare(sorted({e.queue for e in envelopes}))
        if records is None:
            decided = [(env.id, True) for env in envelopes]
            todo = list(envelopes)
            failures = await self._publish_jobs(todo)
        elif any(env.key is not None or env.replay for env in envelopes):
            # A key must be claimed (a replay's record replaced) before anything is
            # published: that decides whether the job is sent at all.
            decided = await records.enqueue(envelopes)
            todo = [env for env, (_, new) in zip(envelopes, decided, strict=True) if new]
            failures = await self._publish_jobs(todo)
        else:
            # Fresh ids and no keys: the record and the message go out together, one round
            # trip's wait instead of two. A worker that gets the message before the record
            # is stored creates it (START), and ENQUEUE then leaves it alone.
            todo = list(envelopes)
            stored, published = await asyncio.gather(
                records.enqueue(envelopes), self._publish_jobs(todo), return_exceptions=True
            )
            if isinstance(published, BaseException):
                if not isinstance(stored, BaseException):
                    with anyio.CancelScope(shield=True):
                        await self._forget(todo)
                raise published
            if isinstance(stored, BaseException):
                raise stored
            decided, failures = stored, published
        why = {env.id: failure for env, failure in zip(todo, failures, strict=True) if failure}
        if why:
            await self._forget([env for env in todo if env.id in why])
        # Looked up by the id each job was given, not its own: a job whose key another job
        # of the batch claimed shares that job's fate, refusal included (its key is free).
        return [why.get(job_id) or job_id for job_id, _ in decided]

    async def _publish_jobs(self, envelopes: Sequence[Envelope]) -> list[BaseException | None]:
        with self._link.errors("enqueueing"):
            messages = []
            for env in envelopes:
                exchange, key = await self._open.topology.route(env.queue, env.eta)
                table = headers(eta=env.eta) if env.eta is not None else None
                messages.append(Outgoing(exchange, key, env.body, env.id, table, env.priority))
            try:
                return await self._open.publisher.publish(messages)
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await self._unanswered(envelopes)
                raise

    async def _unanswered(self, envelopes: Sequence[Envelope]) -> None:
        """A publish that raised (the connection went before the confirms came) may have
        reached the queue or not. Jobs without a key are taken back out of the records: a
        copy that did arrive stores its record again when a worker starts it. A keyed job
        cannot go that way: its key would be free, the producer's next try would make a
        second job of it, and both would run. Its record stays, marked, and that next try
        replaces it (the marked one ends as cancelled, so its copy is skipped)."""
        records = self.records
        if records is None:
            return
        keyed = [env for env in envelopes if env.key is not None and not env.replay]
        if keyed:
            for q, ids in _ids_by_queue(keyed).items():
                await records.unsure(q, ids)
        await self._forget([env for env in envelopes if env.key is None or env.replay])

    async def _forget(self, envelopes: Sequence[Envelope]) -> None:
        """Take refused jobs back out of the records."""
        if self.records is None:
            return
        for q, ids in _ids_by_queue(envelopes).items():
            await self.records.forget(q, ids)

    # -- consuming -------------------------------------------------------------------------
    async def fetch(
        self, queues: Sequence[str], limit: int, *, timeout: float | None
    ) -> list[Delivery]:
        return await self._open.fetcher.fetch(queues, limit, timeout)

    async def settle(self, settlements: Sequence[Settlement]) -> None:
        parts = self._open
        try:
            await parts.settler.settle(settlements)
        finally:
            # Counted running until its retry or dead letter is published: never nowhere.
            parts.fetcher.settled(settlements)

    async def stop_consuming(self) -> None:
        """Cancel the consumers, so nothing more is delivered to this process, and hand
        back to their queues the deliveries no worker has taken."""
        await self._open.fetcher.stop()

    async def maintain(self, queues: Sequence[str]) -> None:
        """Move delayed jobs between waits (see mover.py), and keep the records' store
        tidy where it does not expire records by itself."""
        async with anyio.create_task_group() as tg:
            if self.records is not None:
                tg.start_soon(self.records.maintain)
            await self._open.mover.run(queues)

    # -- operations ------------------------------------------------------------------------
    async def minute_counts(self, queues: Sequence[str], minutes: int) -> list[MinuteCounts]:
        if self.records is None:
            return []
        return await self.records.minute_counts(queues, minutes)

    async def queue_stats(self, queues: Sequence[str] | None = None) -> list[QueueStats]:
        return await self._open.queues.stats(queues)

    async def dead_letters(
        self, queue: str, *, limit: int = 100, after: str | None = None
    ) -> list[DeadLetter]:
        return await self._open.dead_letters.page(queue, limit=limit, after=after)

    async def purge_dead(self, queue: str, ids: Sequence[str] | None = None) -> int:
        return await self._open.dead_letters.purge(queue, ids)

    async def trim_dead(self, queues: Sequence[str]) -> list[TrimmedDeadLetters]:
        dead_letters = self._open.dead_letters
        trims = [await dead_letters.trim(q, self.dead_ttl, self.dead_max) for q in queues]
        return [t for t in trims if t.expired or t.beyond_max]

    async def purge_queue(self, queue: str, *, limit: int = 1000) -> int:
        return await self._open.queues.purge(queue, limit=limit)

    async def remove_queue(self, queue: str) -> None:
        await self._open.queues.remove(queue)

    async def list_jobs(
        self, queue: str, status: JobStatus, *, limit: int = 100, after: str | None = None
    ) -> list[JobListing]:
        """See listing.py: without records, RUNNING is a ``ConfigurationError``."""
        return await self._open.listing.jobs(queue, status, limit=limit, after=after)


class _Parts:
    """The backend's parts for one connection: a close drops them with what they remember
    (declared queues, the consumer), and the next connect builds new ones."""

    __slots__ = (
        "dead_letters",
        "fetcher",
        "listing",
        "mover",
        "publisher",
        "queues",
        "settler",
        "topology",
    )

    def __init__(
        self,
        backend: AmqpBackend,
        link: Link,
        names: Names,
        records: JobRecords | None,
        heard: CancelRequests,
    ) -> None:
        self.topology = topology = Topology(link, names)
        self.publisher = publisher = Publisher(link, topology)
        self.dead_letters = dead_letters = DeadLetters(link, names)
        self.settler = Settler(link, topology, publisher, dead_letters, records)
        # A delivery cancelled before its hand-over is settled through the backend's own
        # settle (looked up at the call: a test may wrap it), like every other.
        settle = lambda settlements: backend.settle(settlements)  # noqa: E731
        self.fetcher = fetcher = Fetcher(link, topology, records, heard, settle)
        self.mover = mover = DelayMover(link, topology, publisher)
        self.queues = Queues(link, topology, records, fetcher, mover)
        self.listing = Listing(link, topology, dead_letters, records)


def _ids_by_queue(envelopes: Sequence[Envelope]) -> dict[str, list[str]]:
    by_queue: dict[str, list[str]] = {}
    for env in envelopes:
        by_queue.setdefault(env.queue, []).append(env.id)
    return by_queue
