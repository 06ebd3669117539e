"""asyncq on RabbitMQ (AMQP 0-9-1, aio-pika): durable work queues with late acks and
publisher confirms, delays through TTL wait queues (see topology.py), a dead-letter queue
per queue, and job records in Redis (see records.py).

Producing: the job's record is stored (which claims its idempotency key), then its
message is published with a confirm; a batch waits for all its confirms at once. A
message the broker refuses is taken back out of the records and reported.

Consuming: one consumer per queue on a channel whose ``basic.qos`` prefetch equals the
worker's slots, so RabbitMQ never hands a worker more unacknowledged jobs than it can hold.
Deliveries wait in a buffer until the worker's fetch takes them; a fetch admits them in
one Redis round trip, which drops copies of jobs that already ended. Acknowledgements go
out after the handler finished, as one ``multiple`` ack for each run of settled delivery
tags. A retry or dead-letter is published (and confirmed) before the delivery is acked, so
a crash in between duplicates a job at worst and never loses it. RabbitMQ itself returns a
lost worker's unacknowledged jobs to the queue the moment its connection closes.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import re
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Self, cast

import aio_pika
import aiormq
import anyio
from aio_pika.abc import (
    AbstractIncomingMessage,
    AbstractRobustChannel,
    AbstractRobustConnection,
)
from aiormq.abc import DeliveredMessage
from pamqp import commands as spec
from pamqp.common import FieldTable

from asyncq.backend import Backend, Delivery, Envelope, Outcome, Settlement, redact_url
from asyncq.errors import (
    BrokerError,
    BrokerUnavailable,
    ConfigurationError,
    ErrorInfo,
    MessageTooLarge,
)
from asyncq.records import DeadLetter, QueueStats
from asyncq.store import JobStore

from . import publisher
from .connection import open_connection, server_version
from .consumer_timeout import RAISE_CONSUMER_TIMEOUT, consume_arguments, timed_out
from .jobstore import AmqpJobStore
from .presence import Presence
from .publisher import Outgoing
from .records import Admission, RecordStore
from .settings import AmqpSettings
from .topology import Names, next_wait, queue_arguments

__all__ = ["AmqpBackend", "QueueFull"]

log = logging.getLogger("asyncq.amqp")


# RabbitMQ's words when a publish is over its max_message_size (it closes the channel).
_MESSAGE_SIZE = re.compile(r"message size (\d+) is larger than configured max size (\d+)")


def default_max_message_size(version: tuple[int, ...] | None) -> int | None:
    """RabbitMQ's default ``max_message_size`` for a server version: 128 MiB until 4.0
    lowered it to 16 MiB. None for a broker that does not say its version."""
    if version is None:
        return None
    return 16 * 1024 * 1024 if version >= (4,) else 128 * 1024 * 1024


_RETRY_WAIT_MS = 1024  # how long a delayed job refused by a full work queue waits to retry


class QueueFull(BrokerError):
    """RabbitMQ refused a publish: the queue is at its ``max_length`` (or a policy's)."""


class _Receipt:
    """Where a delivery came from, to acknowledge it on the same channel."""

    __slots__ = ("attempt", "channel", "tag")

    def __init__(self, channel: aiormq.abc.AbstractChannel, tag: int, attempt: int) -> None:
        self.channel = channel
        self.tag = tag
        self.attempt = attempt


class _Acks:
    """Unacknowledged delivery tags of one channel, in delivery order.

    Settled tags at the front are acknowledged together with one ``multiple`` ack; a tag
    settled behind an unsettled one is acknowledged on its own, so a long job never holds
    back the acks (and so the prefetch window) of the quick ones after it.
    """

    __slots__ = ("channel", "settled")

    def __init__(self, channel: aiormq.abc.AbstractChannel) -> None:
        self.channel = channel
        self.settled: dict[int, bool] = {}

    def delivered(self, tag: int) -> None:
        self.settled[tag] = False

    def ack(self, tags: Sequence[int]) -> list[tuple[int, bool]]:
        """Mark ``tags`` settled; return the (tag, multiple) acks to send."""
        settled = self.settled
        for tag in tags:
            if tag in settled:
                settled[tag] = True
        front = 0
        for tag, done in settled.items():
            if not done:
                break
            front = tag
        acks: list[tuple[int, bool]] = []
        if front:
            for tag in [t for t in settled if t <= front]:
                del settled[tag]
            acks.append((front, True))
        for tag in tags:
            if settled.pop(tag, False):
                acks.append((tag, False))
        return acks


class AmqpBackend(Backend):
    """The asyncq contract on RabbitMQ (3.10 or newer), job records in Redis."""

    system = "rabbitmq"
    lease_renewal_interval = None  # RabbitMQ holds a delivery for as long as its channel lives
    ack_deadline_name = "RabbitMQ's consumer_timeout"

    def __init__(self, settings: AmqpSettings) -> None:
        self.settings = settings
        # ... up to its consumer timeout, though: see consumer_timeout.py.
        self.ack_deadline = settings.consumer_timeout
        self.ack_deadline_hint = RAISE_CONSUMER_TIMEOUT
        self.names = Names(settings.prefix)
        self._presence = Presence(settings.prefix)
        self.records = RecordStore(
            settings.records, prefix=f"{settings.prefix}:amqp", result_ttl=settings.result_ttl
        )
        self._where = redact_url(settings.connection_url)
        self._connection: AbstractRobustConnection | None = None
        self._publisher: AbstractRobustChannel | None = None
        self._consumer: AbstractRobustChannel | None = None
        self._declared: set[str] = set()
        self._declared_names: dict[str, str] = {}
        """RabbitMQ queue name -> the asyncq queue it belongs to."""
        self._waits: set[int] = set()
        self._declaring = anyio.Lock()
        self._consuming: list[str] = []
        self._consumer_tags: dict[str, str] = {}
        self._prefetch = 0
        self._buffer: deque[tuple[str, DeliveredMessage]] = deque()
        self._admitted: deque[Delivery] = deque()
        self._cancel_requests: dict[str, float] = {}
        self._arrived = asyncio.Event()
        self._acks: dict[int, _Acks] = {}
        self._stopped_consuming = False
        self._job_store = AmqpJobStore(self)

    @property
    def store(self) -> JobStore:
        return self._job_store

    @classmethod
    def from_url(cls, url: str) -> Self:
        return cls(AmqpSettings.from_url(url))

    # -- connection ------------------------------------------------------------------------
    async def connect(self) -> None:
        await self.records.connect()
        try:
            self._connection = await open_connection(self.settings)
            self.max_message_size = self.settings.max_message_size or default_max_message_size(
                server_version(self._connection)
            )
            with self._errors("connecting"):
                self._publisher = await self._connection.channel(publisher_confirms=True)
        except BaseException:
            # The App is not open: what did connect (the records' Redis) must not leak.
            with anyio.CancelScope(shield=True):
                await self.close()
            raise

    async def close(self) -> None:
        with anyio.CancelScope(shield=True):
            await self._unadmit()
        connection, self._connection = self._connection, None
        self._publisher = self._consumer = None
        self._declared.clear()
        self._declared_names.clear()
        self._waits.clear()
        self._consuming.clear()
        self._consumer_tags.clear()
        self._buffer.clear()
        self._acks.clear()
        self._prefetch = 0
        self._stopped_consuming = False
        try:
            if connection is not None:
                # Closing returns every unacknowledged delivery (prefetched, not started)
                # to its queue.
                await connection.close()
        finally:
            await self.records.close()

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        """Map aio-pika's and aiormq's exceptions to asyncq's at the boundary."""
        try:
            yield
        except aiormq.exceptions.ChannelPreconditionFailed as exc:
            too_large = _MESSAGE_SIZE.search(str(exc))
            if too_large is not None:
                # The broker's limit is lower than asyncq took it to be: say so, and how.
                size, limit = (int(n) for n in too_large.groups())
                raise MessageTooLarge(
                    f"RabbitMQ refused a job {action}: it is {size:,} bytes, larger than the "
                    f"broker's max_message_size of {limit:,}; nothing was sent. Pass large "
                    f"data by reference, or set max_message_size={limit} in the broker URL so "
                    "such jobs are refused before they are published",
                    size=size,
                    limit=limit,
                ) from exc
            raise ConfigurationError(
                f"RabbitMQ refused a declaration {action} ({exc}); a queue of that name "
                "exists with other arguments (queue_type, max_length?): delete it or use "
                "another prefix"
            ) from exc
        except (
            aiormq.exceptions.AMQPConnectionError,
            aiormq.exceptions.ChannelInvalidStateError,
            ConnectionError,
            OSError,
        ) as exc:
            raise BrokerUnavailable(
                f"RabbitMQ at {self._where} unreachable {action}: {exc}"
            ) from exc
        except aiormq.exceptions.AMQPError as exc:
            raise BrokerError(f"RabbitMQ failed {action}: {exc}") from exc
        except TimeoutError as exc:
            raise BrokerUnavailable(
                f"RabbitMQ at {self._where} did not answer {action} in time"
            ) from exc

    @property
    def connection(self) -> AbstractRobustConnection:
        if self._connection is None:
            raise BrokerError("the AMQP backend is not connected: open the App first")
        return self._connection

    @property
    def publisher(self) -> AbstractRobustChannel:
        if self._publisher is None:
            raise BrokerError("the AMQP backend is not connected: open the App first")
        return self._publisher

    # -- topology --------------------------------------------------------------------------
    async def _declare(self, queues: Sequence[str]) -> None:
        """Declare the queues' work, dead-letter and delayed queues (once per process)."""
        if all(q in self._declared for q in queues):
            return
        s, names = self.settings, self.names
        async with self._declaring:
            for q in queues:
                if q in self._declared:
                    continue
                channel = self.publisher
                work = queue_arguments(s.queue_type, max_length=s.max_length)
                plain = queue_arguments(s.queue_type)
                try:
                    await channel.declare_queue(names.work(q), durable=True, arguments=work)
                    await channel.declare_queue(names.dead(q), durable=True, arguments=plain)
                    await channel.declare_queue(names.delayed(q), durable=True, arguments=plain)
                except aiormq.exceptions.ChannelPreconditionFailed:
                    await self._reopened(channel)
                    raise
                self._declared.add(q)
                for name in (names.work(q), names.dead(q), names.delayed(q)):
                    self._declared_names[name] = q

    async def _declare_wait(self, ms: int) -> None:
        if ms in self._waits:
            return
        async with self._declaring:
            if ms in self._waits:
                return
            name = self.names.wait(ms)
            channel = self.publisher
            args = queue_arguments(self.settings.queue_type, ttl_ms=ms)
            try:
                exchange = await channel.declare_exchange(
                    name, aio_pika.ExchangeType.FANOUT, durable=True
                )
                queue = await channel.declare_queue(name, durable=True, arguments=args)
                await queue.bind(exchange)
            except aiormq.exceptions.ChannelPreconditionFailed:
                await self._reopened(channel)
                raise
            self._waits.add(ms)

    async def _reopened(self, channel: AbstractRobustChannel) -> None:
        """Wait (at most ``publish_timeout``) until ``channel`` is open again after RabbitMQ
        closed it over an error: a refused declaration, a publish to a missing exchange.

        RabbitMQ closes the channel of such an error (PRECONDITION_FAILED, NOT_FOUND), and
        aio-pika reopens it in a task of its own, later. Raising the error at once would let
        the caller's next call (another enqueue, even for another queue) find the channel
        still closed and fail with ChannelInvalidStateError, reported as "RabbitMQ
        unreachable" although RabbitMQ answered; so the error waits for the reopen.
        """
        reopened = anyio.Event()

        def on_reopen(*_: object) -> None:
            reopened.set()

        channel.reopen_callbacks.add(on_reopen)
        try:
            with anyio.move_on_after(self.settings.publish_timeout):
                if channel.is_closed:  # else reopened already
                    await reopened.wait()
        finally:
            channel.reopen_callbacks.discard(on_reopen)

    # -- publishing ------------------------------------------------------------------------
    async def _route(self, queue: str, eta: float | None) -> tuple[str, str]:
        """(exchange, routing key) for a job of ``queue`` due at ``eta``: its work queue
        if due, else the first wait of its delay."""
        work = self.names.work(queue)
        if eta is None:
            return "", work
        remaining = eta - time.time()
        if remaining <= 0:
            return "", work
        ms, last = next_wait(remaining)
        await self._declare_wait(ms)
        # A bounded work queue refuses what does not fit, and a message dead-lettered into
        # it would then be dropped, not refused: with max_length the last wait ends in
        # q.delayed too, whose mover publishes with a confirm and can wait and try again.
        if last and self.settings.max_length is None:
            return self.names.wait(ms), work
        return self.names.wait(ms), self.names.delayed(queue)

    async def _publish(self, messages: Sequence[Outgoing]) -> list[BaseException | None]:
        """Publish and wait for every confirm at once; per message, None or why it failed."""
        if not messages:
            return []
        with anyio.fail_after(self.settings.publish_timeout):
            channel = cast(aiormq.Channel, await self.publisher.get_underlay_channel())
            confirms = await publisher.publish(channel, messages)
            replies = await asyncio.gather(*confirms, return_exceptions=True)
        for reply in replies:
            # A nack (DeliveryError) refuses one message and is reported per message. Any
            # other failure is the channel's (the broker closed it, the connection was lost)
            # and fails the whole publish, raised for the caller's _errors to turn into
            # asyncq's own error; returned per message, it would escape the mapping.
            if isinstance(reply, Exception) and not isinstance(
                reply, aiormq.exceptions.DeliveryError
            ):
                if isinstance(reply, aiormq.exceptions.AMQPChannelError):
                    await self._reopened(self.publisher)  # the connection is fine
                raise reply
        return [self._refusal(r) for r in replies]

    def _refusal(self, reply: Any) -> BaseException | None:
        if reply is None or isinstance(reply, spec.Basic.Ack):
            return None
        if isinstance(reply, DeliveredMessage):  # returned: no queue took it
            key = reply.routing_key or ""
            # Someone deleted the queue under the running App: declare it on the next use.
            self._declared.discard(self._declared_names.get(key, ""))
            return BrokerError(
                f"RabbitMQ had no queue for the job (routing key {key!r}; deleted while the "
                "App ran?); it is declared again on the next enqueue"
            )
        if isinstance(reply, aiormq.exceptions.DeliveryError):
            limit = self.settings.max_length
            bound = f" (max_length={limit})" if limit else ""
            return QueueFull(f"RabbitMQ refused the job: its queue is full{bound}")
        if isinstance(reply, BaseException):
            return reply
        return BrokerError(f"RabbitMQ did not confirm a publish: {reply!r}")

    @staticmethod
    def _headers(
        *, attempt: int = 1, eta: float | None = None, extra: FieldTable | None = None
    ) -> FieldTable | None:
        table: FieldTable = dict(extra) if extra else {}
        if attempt != 1:
            table["x-attempt"] = attempt
        if eta is not None:
            # Whole milliseconds: AMQP tables may carry floats as single precision, far too
            # coarse for an epoch time.
            table["x-eta-ms"] = math.ceil(eta * 1000)
        return table or None

    # -- producing -------------------------------------------------------------------------
    async def enqueue(self, envelopes: Sequence[Envelope]) -> list[str]:
        with self._errors("declaring queues"):
            await self._declare(sorted({e.queue for e in envelopes}))
        if any(env.key is not None or env.replay for env in envelopes):
            # A key must be claimed (a replay's record replaced) before anything is
            # published: that decides whether the job is sent at all.
            decided = await self.records.enqueue(envelopes)
            todo = [env for env, (_, new) in zip(envelopes, decided, strict=True) if new]
            failures = await self._publish_jobs(todo)
        else:
            # Fresh ids and no keys: the record and the message go out together, one round
            # trip's wait instead of two. A worker that gets the message before the record
            # is stored creates it (START), and ENQUEUE then leaves it alone.
            todo = list(envelopes)
            stored, published = await asyncio.gather(
                self.records.enqueue(envelopes), self._publish_jobs(todo), return_exceptions=True
            )
            if isinstance(published, BaseException):
                if not isinstance(stored, BaseException):
                    with anyio.CancelScope(shield=True):
                        await self._forget(todo)
                raise published
            if isinstance(stored, BaseException):
                raise stored
            decided, failures = stored, published
        refused = [env for env, failure in zip(todo, failures, strict=True) if failure]
        if refused:
            await self._forget(refused)
            first = next(f for f in failures if f is not None)
            if len(envelopes) > 1:
                raise type(first)(f"{first} ({len(refused)} of {len(envelopes)} jobs refused)")
            raise first
        return [job_id for job_id, _ in decided]

    async def _publish_jobs(self, envelopes: Sequence[Envelope]) -> list[BaseException | None]:
        with self._errors("enqueueing"):
            messages = []
            for env in envelopes:
                exchange, key = await self._route(env.queue, env.eta)
                headers = self._headers(eta=env.eta) if env.eta is not None else None
                messages.append(Outgoing(exchange, key, env.body, env.id, headers))
            try:
                return await self._publish(messages)
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await self._forget(envelopes)
                raise

    async def _forget(self, envelopes: Sequence[Envelope]) -> None:
        by_queue: dict[str, list[str]] = {}
        for env in envelopes:
            by_queue.setdefault(env.queue, []).append(env.id)
        for q, ids in by_queue.items():
            await self.records.forget(q, ids)

    # -- consuming -------------------------------------------------------------------------
    async def fetch(
        self, queues: Sequence[str], limit: int, *, timeout: float | None
    ) -> list[Delivery]:
        with self._errors("starting to consume"):
            await self._consume(queues, limit)
        deadline = None if timeout is None else anyio.current_time() + timeout
        while True:
            if self._admitted:
                return await self._hand_over(limit)
            if not self._buffer:
                if deadline is not None and anyio.current_time() >= deadline:
                    return []
                self._arrived.clear()
                with anyio.move_on_after(
                    None if deadline is None else deadline - anyio.current_time()
                ):
                    await self._arrived.wait()
                # Deliveries that came in one read are handed over one task each: let the
                # rest of the burst land, so one fetch takes them together.
                seen = -1
                while seen != len(self._buffer) < limit:
                    seen = len(self._buffer)
                    await asyncio.sleep(0)
                continue
            # Everything buffered is admitted together, one Redis round trip however few
            # slots are free now: the rest waits, admitted, for the next fetches. What
            # arrives meanwhile joins. Admitted deliveries are this worker's: a cancellation
            # must not drop them.
            with anyio.CancelScope(shield=True):
                while self._buffer and len(self._admitted) < limit:
                    batch = list(self._buffer)
                    self._buffer.clear()
                    self._admitted.extend(await self._admit(batch))
            if self._admitted:
                return await self._hand_over(limit)

    async def _hand_over(self, limit: int) -> list[Delivery]:
        """Up to ``limit`` admitted deliveries; one cancelled since its admission is settled
        cancelled here instead of being run."""
        out: list[Delivery] = []
        cancelled: list[Settlement] = []
        while self._admitted and len(out) < limit:
            delivery = self._admitted.popleft()
            if delivery.id in self._cancel_requests:
                cancelled.append(Settlement(delivery, Outcome.CANCELLED))
            else:
                out.append(delivery)
        if cancelled:
            with anyio.CancelScope(shield=True):
                await self.settle(cancelled)
        return out

    async def _unadmit(self) -> None:
        """Admitted deliveries that no worker took: their records go back to queued, and
        they back to their queue when the channel closes."""
        admitted = list(self._admitted)
        self._admitted.clear()
        if admitted:
            try:
                await self.records.settle([Settlement(d, Outcome.RELEASE) for d in admitted])
            except BrokerError as exc:
                log.warning("could not return %d unstarted job(s): %s", len(admitted), exc)

    async def _consume(self, queues: Sequence[str], limit: int) -> None:
        if self._consumer is None:
            self._consumer = await self.connection.channel(publisher_confirms=False)
            self._consumer.reopen_callbacks.add(self._on_reopen)
            self._consumer.close_callbacks.add(self._on_consumer_closed)
        if self._stopped_consuming:  # a worker stopped, and another starts on this App
            self._stopped_consuming = False
            self._consuming.clear()
            self._consumer_tags.clear()
        if limit > self._prefetch:
            # The first fetch asks for every slot: that is the window RabbitMQ may fill.
            self._prefetch = limit
            await self._consumer.set_qos(prefetch_count=limit)
        new = [q for q in queues if q not in self._consuming]
        if new:
            await self._declare(new)
            await self.records.register(new)
            channel = await self._consumer.get_underlay_channel()
            for q in new:
                await self._start_consumer(channel, q)
                self._consuming.append(q)

    async def _start_consumer(self, channel: aiormq.abc.AbstractChannel, queue: str) -> None:
        # Known before the first delivery, which may be handled before ConsumeOk is.
        tag = f"asyncq.{queue}.{os.urandom(6).hex()}"
        self._consumer_tags[tag] = queue
        _deliver_without_tasks(channel, self._consumer_tags, self._delivered)
        await channel.basic_consume(
            self.names.work(queue),
            self._on_message,
            consumer_tag=tag,
            arguments=consume_arguments(self.settings),
        )

    def _on_consumer_closed(self, _: object, exc: BaseException | None, /) -> None:
        connection = self._connection
        timed_out(exc, self.settings, server_version(connection) if connection else None)

    async def _on_reopen(self, channel: AbstractRobustChannel | None, /) -> None:
        """The consumer channel came back after a lost connection: what it had delivered
        went back to the queues with it, so start over."""
        self._buffer.clear()
        self._acks.clear()
        self._consumer_tags.clear()
        await self._unadmit()
        if self._stopped_consuming or channel is None:
            return
        underlay = await channel.get_underlay_channel()
        for q in self._consuming:
            await self._start_consumer(underlay, q)
        log.info("consuming again from %s after a reconnect", ",".join(self._consuming))

    async def _on_message(self, message: DeliveredMessage) -> None:
        self._delivered(message)

    def _delivered(self, message: DeliveredMessage) -> None:
        delivery = message.delivery
        assert isinstance(delivery, spec.Basic.Deliver)
        queue = self._consumer_tags.get(delivery.consumer_tag or "")
        if queue is None:
            return  # from a consumer of before a reconnect: RabbitMQ has taken it back
        channel = message.channel
        acks = self._acks.get(id(channel))
        if acks is None or acks.channel is not channel:
            acks = self._acks[id(channel)] = _Acks(channel)
        acks.delivered(delivery.delivery_tag or 0)
        self._buffer.append((queue, message))
        self._arrived.set()

    async def _admit(self, taken: Sequence[tuple[str, DeliveredMessage]]) -> list[Delivery]:
        # Grouped by queue (START runs per queue); the verdicts come back in this order.
        by_queue: dict[str, list[Delivery]] = {}
        for q, message in taken:
            props, delivery = message.header.properties, message.delivery
            assert isinstance(delivery, spec.Basic.Deliver)
            attempt = (props.headers or {}).get("x-attempt", 1)
            tag = delivery.delivery_tag or 0
            receipt = _Receipt(message.channel, tag, attempt if isinstance(attempt, int) else 1)
            job_id = props.message_id or f"amqp-{q}-{tag}"
            redelivered = bool(delivery.redelivered)
            by_queue.setdefault(q, []).append(
                Delivery(job_id, q, message.body, receipt, redelivered)
            )
        batches = [
            (q, [(d.id, d.receipt.attempt, d.redelivered) for d in ds])
            for q, ds in by_queue.items()
        ]
        try:
            verdicts = await self.records.start(batches)
        except BrokerError:
            # Not admitted: give them back so nothing sits unseen in this worker's buffer.
            for item in reversed(taken):
                self._buffer.appendleft(item)
            raise
        deliveries, skipped = [], []
        grouped = (d for ds in by_queue.values() for d in ds)
        for verdict, d in zip(verdicts, grouped, strict=True):
            if verdict == Admission.SKIP:
                skipped.append(d.receipt)
            else:
                d.redelivered = verdict == Admission.RUN_REDELIVERED
                deliveries.append(d)
        if skipped:
            self._ack(skipped)
        return deliveries

    def _ack(self, receipts: Sequence[_Receipt]) -> None:
        by_channel: dict[int, list[int]] = {}
        for r in receipts:
            by_channel.setdefault(id(r.channel), []).append(r.tag)
        for key, tags in by_channel.items():
            acks = self._acks.get(key)
            if acks is None or acks.channel.is_closed:
                continue  # the channel is gone, and its deliveries went back to the queue
            for tag, multiple in acks.ack(tags):
                self._send(acks.channel.basic_ack(tag, multiple=multiple, wait=False))

    def _send(self, frame: Any) -> None:
        # aiormq's ack is a coroutine that only queues the frame; run it to that point.
        task = asyncio.ensure_future(frame)
        task.add_done_callback(_log_failure)

    async def settle(self, settlements: Sequence[Settlement]) -> None:
        live: list[Settlement] = []
        stale: list[Settlement] = []
        for s in settlements:
            receipt: _Receipt = s.delivery.receipt
            (stale if receipt.channel.is_closed else live).append(s)
        # A delivery whose channel closed is back in its queue and may run elsewhere: only
        # its success is worth recording (the copy will then be skipped).
        stale_done = [s for s in stale if s.outcome is Outcome.SUCCEEDED]
        if any(s.outcome is Outcome.RELEASE for s in live):
            await self._stop_consuming()
        with self._errors("settling jobs"):
            messages, owners = [], []
            for s in live:
                d = s.delivery
                if s.outcome is Outcome.RETRY:
                    attempt = s.attempt + 1
                    exchange, key = await self._route(d.queue, s.eta)
                    headers = self._headers(attempt=attempt, eta=s.eta)
                    messages.append(Outgoing(exchange, key, s.retry_body or b"", d.id, headers))
                    owners.append(s)
                elif s.outcome is Outcome.DEAD:
                    messages.append(self._dead_message(s))
                    owners.append(s)
            failures = await self._publish(messages)
        failed = {id(s) for s, f in zip(owners, failures, strict=True) if f is not None}
        if failed:
            log.error("RabbitMQ refused %d retry/dead-letter publish(es)", len(failed))
        recorded = [s for s in live if id(s) not in failed] + stale_done
        if recorded:
            await self.records.settle(recorded)
        releases = [s.delivery.receipt for s in live if s.outcome is Outcome.RELEASE]
        acked = [
            s.delivery.receipt
            for s in live
            if id(s) not in failed and s.outcome is not Outcome.RELEASE
        ]
        self._ack(acked)
        if releases:
            self._requeue(releases)
        if failed:
            raise BrokerError(f"RabbitMQ refused {len(failed)} retry/dead-letter publish(es)")

    def _requeue(self, receipts: Sequence[_Receipt]) -> None:
        """Give deliveries back to the front of their queue (a graceful shutdown). The
        record says queued again, so the next delivery is not taken for a lost worker's."""
        for r in receipts:
            acks = self._acks.get(id(r.channel))
            if acks is None or r.channel.is_closed:
                continue
            acks.settled.pop(r.tag, None)
            self._send(r.channel.basic_nack(r.tag, multiple=False, requeue=True, wait=False))

    async def _stop_consuming(self) -> None:
        """Cancel the consumers, so released jobs are not delivered to this worker again."""
        if self._stopped_consuming or self._consumer is None:
            return
        self._stopped_consuming = True
        await self._unadmit()
        channel = await self._consumer.get_underlay_channel()
        for tag in list(self._consumer_tags):
            try:
                await channel.basic_cancel(tag)
            except aiormq.exceptions.AMQPError as exc:
                log.debug("could not cancel consumer %s: %s", tag, exc)

    def _dead_message(self, s: Settlement) -> Outgoing:
        d, error = s.delivery, s.error or ErrorInfo("Unknown", "")
        now = time.time()
        headers: FieldTable = {
            "x-task": s.task,
            "x-error-type": error.type,
            "x-error-message": error.message,
            "x-error-traceback": error.traceback,
            "x-died-ms": round(now * 1000),
            "x-cursor": f"{time.time_ns():020d}-{d.id}",
        }
        table = self._headers(attempt=d.receipt.attempt, extra=headers)
        return Outgoing("", self.names.dead(d.queue), d.body, d.id, table)

    async def maintain(self, queues: Sequence[str]) -> None:
        """Pass delayed jobs between waits: each message in ``<queue>.delayed`` goes on to
        the next wait of its delay (or to the work queue, once due)."""
        with self._errors("declaring queues"):
            await self._declare(queues)
            channel = await self.connection.channel(publisher_confirms=False)
        moving = _InFlight()
        consumers: list[tuple[aio_pika.abc.AbstractQueue, str]] = []
        try:
            await channel.set_qos(prefetch_count=100)
            for q in queues:
                queue = await channel.declare_queue(
                    self.names.delayed(q),
                    durable=True,
                    arguments=queue_arguments(self.settings.queue_type),
                )
                consumers.append((queue, await queue.consume(self._make_hop(q, moving))))
            await anyio.sleep_forever()
        finally:
            with anyio.CancelScope(shield=True):
                # Take no more, and let the moves under way finish: a move cut off between
                # its publish and its ack would move the job twice.
                if not channel.is_closed:
                    for consumer, tag in consumers:
                        await consumer.cancel(tag)
                with anyio.move_on_after(5):
                    await moving.idle()
                if not channel.is_closed:
                    await channel.close()

    def _make_hop(self, queue: str, moving: _InFlight) -> Callable[[AbstractIncomingMessage], Any]:
        async def hop(message: AbstractIncomingMessage) -> None:
            with moving:
                await move(message)

        async def move(message: AbstractIncomingMessage) -> None:
            headers = dict(message.headers or {})
            raw_eta = headers.get("x-eta-ms")
            eta = raw_eta / 1000 if isinstance(raw_eta, int) else None
            headers.pop("x-death", None)  # RabbitMQ's record of the waits so far
            job_id = message.message_id or ""
            try:
                with self._errors("moving a delayed job"):
                    exchange, key = await self._route(queue, eta)
                    moved = Outgoing(exchange, key, message.body, job_id, headers or None)
                    (failure,) = await self._publish([moved])
                    if failure is not None:
                        # Refused (its work queue is full): it waits a second and comes
                        # back here to try again.
                        log.warning("delayed job %s waits: %s", job_id, failure)
                        await self._declare_wait(_RETRY_WAIT_MS)
                        wait = self.names.wait(_RETRY_WAIT_MS)
                        back = self.names.delayed(queue)
                        again = Outgoing(wait, back, message.body, job_id, moved.headers)
                        (failure,) = await self._publish([again])
                    if failure is not None:
                        raise failure
                    await message.ack()
            except (BrokerError, aiormq.exceptions.AMQPError) as exc:
                log.warning("moving delayed job %s failed, will retry in 1 s: %s", job_id, exc)
                await anyio.sleep(1.0)  # back off from a broker that refuses everything
                if not message.channel.is_closed:
                    await message.nack(requeue=True)

        return hop

    # -- operations ------------------------------------------------------------------------
    async def queue_stats(self, queues: Sequence[str] | None = None) -> list[QueueStats]:
        if queues is None:
            queues = await self.records.queues()
        names = [n for q in queues for n in self._depth_names(q)]
        with self._errors("reading queue depths"):
            counts, depths = await asyncio.gather(self.records.counts(queues), self._depths(names))
        # RabbitMQ counts only ready messages; those delivered to this process and not yet
        # taken by its worker are pending too. (Another process holds such messages only
        # briefly: its prefetch window never exceeds its free slots.)
        buffered = Counter(q for q, _ in self._buffer)
        return [
            QueueStats(q, depths[2 * i] + buffered[q], scheduled, running, depths[2 * i + 1])
            for i, (q, (scheduled, running)) in enumerate(zip(queues, counts, strict=True))
        ]

    def _depth_names(self, queue: str) -> tuple[str, str]:
        return self.names.work(queue), self.names.dead(queue)

    async def _depths(self, names: Sequence[str]) -> list[int]:
        """Ready messages per queue, 0 for a queue that does not exist."""
        out: list[int] = [0] * len(names)
        known = [i for i, name in enumerate(names) if name in self._declared_names]
        if known:
            # Declared by this process, so they exist: ask on the publishing channel, all at
            # once.
            publisher = await self.publisher.get_underlay_channel()
            replies = await asyncio.gather(
                *(publisher.queue_declare(names[i], passive=True) for i in known)
            )
            for i, ok in zip(known, replies, strict=True):
                out[i] = ok.message_count or 0
        spare: aio_pika.abc.AbstractChannel | None = None
        try:
            for i, name in enumerate(names):
                if name in self._declared_names:
                    continue
                # Perhaps missing, and a passive declare of a missing queue closes its
                # channel: ask on a channel of its own.
                if spare is None or spare.is_closed:
                    spare = await self.connection.channel(publisher_confirms=False)
                try:
                    queue = await spare.declare_queue(name, passive=True)
                except aiormq.exceptions.ChannelNotFoundEntity:
                    continue
                out[i] = queue.declaration_result.message_count or 0
        finally:
            if spare is not None and not spare.is_closed:
                await spare.close()
        return out

    async def dead_letters(
        self, queue: str, *, limit: int = 100, after: str | None = None
    ) -> list[DeadLetter]:
        found: list[DeadLetter] = []
        with self._errors("listing dead letters"):
            async with self._browse(queue) as messages:
                async for message in messages:
                    letter = _dead_letter(queue, message)
                    if after is None or letter.cursor > after:
                        found.append(letter)
                        if len(found) >= limit:
                            break
        return found

    async def purge_dead(self, queue: str, ids: Sequence[str] | None = None) -> int:
        with self._errors("purging dead letters"):
            if ids is None:
                channel = await self.connection.channel(publisher_confirms=False)
                try:
                    try:
                        dead = await channel.declare_queue(self.names.dead(queue), passive=True)
                    except aiormq.exceptions.ChannelNotFoundEntity:
                        return 0
                    ok = await dead.purge()
                    return int(ok.message_count or 0)
                finally:
                    if not channel.is_closed:
                        await channel.close()
            wanted, count = set(ids), 0
            async with self._browse(queue) as messages:
                async for message in messages:
                    if message.message_id in wanted:
                        wanted.discard(message.message_id)  # the oldest entry of each job only
                        await message.ack()
                        count += 1
                        if not wanted:
                            break
            return count

    async def purge_queue(self, queue: str, *, limit: int = 1000) -> int:
        # Ready messages are taken off the work queue (those a worker holds are running
        # and stay), their records cancelled, and then they are acknowledged: a crash in
        # between leaves a cancelled job's message, which admission drops.
        taken: list[AbstractIncomingMessage] = []
        with self._errors("purging a queue"):
            async with self._browse_queue(self.names.work(queue)) as messages:
                async for message in messages:
                    taken.append(message)
                    if len(taken) >= limit:
                        break
                ids = [m.message_id or "" for m in taken]
                purged = await self.records.purge(queue, ids, limit - len(taken))
                if taken:
                    await taken[-1].ack(multiple=True)
        return purged

    async def remove_queue(self, queue: str) -> None:
        names = self.names
        with self._errors("removing a queue"):
            channel = await self.connection.channel(publisher_confirms=False)
            try:
                for name in (names.work(queue), names.dead(queue), names.delayed(queue)):
                    await channel.queue_delete(name)
                    self._declared_names.pop(name, None)
            finally:
                if not channel.is_closed:
                    await channel.close()
        self._declared.discard(queue)
        await self.records.unregister(queue)

    def _browse(self, queue: str) -> _Browse:
        return self._browse_queue(self.names.dead(queue))

    def _browse_queue(self, name: str) -> _Browse:
        return _Browse(self, name)


class _InFlight:
    """Counts the delayed-job moves under way, so a shutdown can wait for them."""

    def __init__(self) -> None:
        self._count = 0
        self._idle = anyio.Event()
        self._idle.set()

    def __enter__(self) -> None:
        if not self._count:
            self._idle = anyio.Event()
        self._count += 1

    def __exit__(self, *exc: object) -> None:
        self._count -= 1
        if not self._count:
            self._idle.set()

    async def idle(self) -> None:
        await self._idle.wait()


class _Browse:
    """Read a queue from the front without taking anything: every message is fetched
    unacknowledged and goes back, in its place, when the channel closes. What the reader
    acknowledges is removed."""

    def __init__(self, backend: AmqpBackend, name: str) -> None:
        self._backend = backend
        self._name = name
        self._channel: aio_pika.abc.AbstractChannel | None = None

    async def __aenter__(self) -> _Browse:
        self._channel = await self._backend.connection.channel(publisher_confirms=False)
        return self

    async def __aexit__(self, *exc: object) -> None:
        channel, self._channel = self._channel, None
        if channel is not None and not channel.is_closed:
            with anyio.CancelScope(shield=True):
                await channel.close()

    def __aiter__(self) -> _Browse:
        return self

    async def __anext__(self) -> AbstractIncomingMessage:
        assert self._channel is not None
        try:
            queue = await self._channel.get_queue(self._name, ensure=False)
            message = await queue.get(no_ack=False, fail=False)
        except aiormq.exceptions.ChannelNotFoundEntity:
            raise StopAsyncIteration from None
        if message is None:
            raise StopAsyncIteration
        return message


def _dead_letter(queue: str, message: AbstractIncomingMessage) -> DeadLetter:
    headers = message.headers or {}

    def text(name: str) -> str:
        value = headers.get(name)
        return value.decode() if isinstance(value, bytes) else str(value or "")

    died = headers.get("x-died-ms")
    return DeadLetter(
        id=message.message_id or "",
        queue=queue,
        body=message.body,
        error=ErrorInfo(
            text("x-error-type") or "Unknown",
            text("x-error-message"),
            text("x-error-traceback"),
        ),
        died_at=died / 1000 if isinstance(died, int) else 0.0,
        task=text("x-task"),
        cursor=text("x-cursor"),
    )


def _deliver_without_tasks(
    channel: aiormq.abc.AbstractChannel,
    tags: dict[str, str],
    delivered: Callable[[DeliveredMessage], None],
) -> None:
    """Hand this channel's deliveries for ``tags`` to ``delivered`` directly.

    aiormq starts a task per delivery to run its consumer callback; ours only appends to a
    buffer, so the task is pure overhead (a tenth of a busy worker's time). This replaces
    the channel's delivery handler with one that reads the message the same way and calls
    ``delivered`` in place; deliveries for other consumers take aiormq's own path. Where
    aiormq's internals differ from what this expects, nothing is changed.
    """
    original = getattr(channel, "_on_deliver_frame", None)
    read_header = getattr(channel, "_Channel__get_content_header", None)
    read_content = getattr(channel, "_read_content", None)
    if original is None or read_header is None or read_content is None:
        log.debug("this aiormq delivers through a task per message: %r", channel)
        return
    if getattr(original, "asyncq_direct", False):
        return  # installed already

    async def on_deliver(frame: spec.Basic.Deliver) -> None:
        if frame.consumer_tag not in tags:
            await original(frame)
            return
        header = await read_header()
        delivered(await read_content(frame, header))

    on_deliver.asyncq_direct = True  # type: ignore[attr-defined]
    channel._on_deliver_frame = on_deliver  # type: ignore[attr-defined]


def _log_failure(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.debug("acknowledgement not sent: %s", task.exception())
