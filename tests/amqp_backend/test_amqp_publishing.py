"""Publishes the broker refuses: a work queue bounded by ``max_length`` refuses the job
beyond it (a nack to the publisher confirm), ``enqueue`` raises ``QueueFull``, and the
refused job leaves nothing behind: no record, no claimed idempotency key. A publish the
broker answers by closing the channel fails at once, as a BrokerError."""

from __future__ import annotations

import logging
import time

import aio_pika
import anyio
import pytest
import redis.asyncio as aioredis
import services
from asyncq_amqp import QueueFull

import asyncq
from asyncq import JobStatus

from .amqp_support import amqp_url

pytestmark = pytest.mark.anyio


async def record_keys(prefix: str) -> list[str]:
    """The Redis keys the backend keeps for ``prefix``, read straight from Redis."""
    async with aioredis.Redis.from_url(services.REDIS_URL) as client:
        return sorted([key.decode() async for key in client.scan_iter(f"{prefix}:*")])


async def test_publish_beyond_max_length_raises_queue_full_and_leaves_no_record(
    prefix: str,
) -> None:
    app = asyncq.App(amqp_url(prefix, max_length=2), shutdown_timeout=2.0)
    ran: list[str] = []

    @app.task
    async def work(n: int) -> int:
        ran.append(asyncq.current_job().id)
        return n

    async with app:
        first = await work.enqueue(1)
        second = await work.options(key="second").enqueue(2)
        before = await record_keys(prefix)
        with pytest.raises(QueueFull) as refused:
            await work.options(key="third").enqueue(3)
        # Without a key (its record is stored while it is published), and a whole batch.
        with pytest.raises(QueueFull) as refused_plain:
            await work.enqueue(4)
        with pytest.raises(QueueFull) as refused_batch:
            await work.enqueue_many([(5,), (6,)])
        # Each refused job is taken back out of the records: the same keys as before them,
        # so no job record and no claim on an idempotency key.
        assert await record_keys(prefix) == before
        assert not [key for key in before if key.endswith(":key:third")], before
        assert (await app.queue_stats())["default"].pending == 2  # still exactly 2
        assert await first.status() is await second.status() is JobStatus.QUEUED

        async with app.worker(concurrency=2):
            assert [await first.result(timeout=10), await second.result(timeout=10)] == [1, 2]
            # Room again, and the refused job's key is free: a new job takes it and runs.
            third = await work.options(key="third").enqueue(3)
            assert third.id not in (first.id, second.id)
            assert await third.result(timeout=10) == 3
        assert sorted(ran) == sorted([first.id, second.id, third.id])  # each ran once
        # A key that stayed with its job: enqueueing under it again names that job.
        again = await work.options(key="second").enqueue(2)
        assert again.id == second.id
    assert isinstance(refused.value, asyncq.BrokerError)
    full = "RabbitMQ refused the job: its queue is full (max_length=2)"
    assert str(refused.value) == str(refused_plain.value) == full
    assert str(refused_batch.value) == f"{full} (2 of 2 jobs refused)"


async def test_publish_to_an_exchange_deleted_under_the_app_fails_at_once(prefix: str) -> None:
    # An App declares each wait queue's exchange once; here an operator deletes one while
    # the App runs. RabbitMQ answers the next publish to it by closing the channel: the
    # enqueue fails then and there (not when publish_timeout runs out), as a BrokerError.
    app = asyncq.App(amqp_url(prefix, publish_timeout=30), shutdown_timeout=2.0)

    @app.task
    async def later() -> None:
        pass

    async with app:
        # A minute's delay starts with the 32.768 s wait (however long the enqueue takes).
        await later.options(delay=60).enqueue()
        async with await aio_pika.connect(services.AMQP_URL) as operator:
            channel = await operator.channel()
            await channel.exchange_delete(f"{prefix}.wait.32768")
        before = await record_keys(prefix)
        began = time.monotonic()
        with pytest.raises(asyncq.BrokerError) as caught:
            await later.options(delay=60).enqueue()
        took = time.monotonic() - began
        # The App goes on at once: its channel is reopened, which declares the exchange again.
        again = await later.options(delay=60).enqueue()
        assert await again.status() is JobStatus.SCHEDULED
        # The failed job left no record: only the new job's came after.
        new = [key for key in await record_keys(prefix) if key not in before]
        assert new and all(again.id in key for key in new), new
    print(f"publish to a deleted exchange failed after {took * 1000:.0f} ms")
    assert took < 5, f"failed only after {took:.1f} s"
    message = str(caught.value)
    assert "NOT_FOUND" in message and f"'{prefix}.wait.32768'" in message, message


async def test_publish_to_a_queue_deleted_under_the_app_fails_and_redeclares(prefix: str) -> None:
    # Publishes are mandatory: with its work queue deleted by an operator, a job has nowhere
    # to go, and RabbitMQ returns it instead of dropping it. The enqueue fails, leaves no
    # record, and the next one declares the queue again.
    app = asyncq.App(amqp_url(prefix), shutdown_timeout=2.0)

    @app.task
    async def work() -> None:
        pass

    async with app:
        await work.enqueue()
        async with await aio_pika.connect(services.AMQP_URL) as operator:
            channel = await operator.channel()
            await channel.queue_delete(f"{prefix}.default")
        before = await record_keys(prefix)
        with pytest.raises(asyncq.BrokerError, match="no queue for the job"):
            await work.enqueue()
        assert await record_keys(prefix) == before
        again = await work.enqueue()
        assert await again.status() is JobStatus.QUEUED
        assert (await app.queue_stats([app.default_queue]))[app.default_queue].pending == 1


class _Heard(logging.Handler):
    """Sets an event when a log record containing ``text`` is emitted."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text
        self.event = anyio.Event()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if self.text in message:
            self.messages.append(message)
            self.event.set()


async def test_delayed_job_due_while_its_queue_is_full_waits_for_room(prefix: str) -> None:
    # RabbitMQ drops a message dead-lettered into a full queue. With max_length a delayed
    # job's last wait therefore ends where a worker publishes it with a confirm: refused,
    # it waits a second and tries again, until there is room.
    app = asyncq.App(amqp_url(prefix, max_length=1), shutdown_timeout=2.0)
    blocking, release = anyio.Event(), anyio.Event()

    @app.task
    async def hold() -> None:
        blocking.set()
        await release.wait()

    @app.task
    async def later() -> str:
        return "ran"

    heard = _Heard("waits")
    logging.getLogger("asyncq.amqp").addHandler(heard)
    async with app, app.worker(concurrency=1, prefetch=0):
        await hold.enqueue()
        with anyio.fail_after(5):
            await blocking.wait()  # the worker holds it; the next job fills the queue
        filler = await hold.enqueue()
        delayed = await later.options(delay=0.05).enqueue()
        try:
            with anyio.fail_after(5):
                await heard.event.wait()  # the full queue refused the due job
        finally:
            logging.getLogger("asyncq.amqp").removeHandler(heard)
            release.set()
        await filler.result(timeout=5)
        assert await delayed.result(timeout=10) == "ran"
    assert heard.messages[0].startswith(f"delayed job {delayed.id} waits")


async def test_callers_batched_together_are_each_told_of_their_own_refusal(prefix: str) -> None:
    # Callers arriving while a publish is in flight share the next batch. With the queue
    # full, each of them is refused alone; one whose key another caller of the batch
    # claimed is refused with it (the key's job was never published), not handed its id.
    app = asyncq.App(amqp_url(prefix, max_length=2), shutdown_timeout=2.0)

    @app.task
    async def work(n: int) -> int:
        return n

    outcomes: dict[str, object] = {}

    async def caller(name: str, key: str | None) -> None:
        try:
            outcomes[name] = (await work.options(key=key).enqueue(0)).id
        except QueueFull as exc:
            outcomes[name] = str(exc)

    async with app:
        await work.enqueue(0)
        before = await record_keys(prefix)
        async with anyio.create_task_group() as tg:
            tg.start_soon(caller, "first", None)  # sent at once, alone: the queue's second
            for name, key in [("keyed", "k"), ("same-key", "k"), ("plain", None)]:
                tg.start_soon(caller, name, key)  # the batch after it: refused
        assert (await app.queue_stats())["default"].pending == 2
        accepted = outcomes.pop("first")
        full = "RabbitMQ refused the job: its queue is full (max_length=2)"
        assert outcomes == {"keyed": full, "same-key": full, "plain": full}
        # Only the accepted job's record came after; the key is free.
        new = [key for key in await record_keys(prefix) if key not in before]
        assert new and all(str(accepted) in key for key in new), new
