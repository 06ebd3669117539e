"""A keyed enqueue whose publish reached the queue but whose confirm was lost with the
connection: the enqueue raises, the producer tries again with the same key, and the job
runs once. RabbitMQ cannot be asked whether the first message arrived, so the records
keep the first job, marked, and the retry replaces it; the first copy, when a worker
takes it, is skipped. Without that, the retry found the key free and made a second job
of it (what the chaos soak found on the RabbitMQ cluster)."""

from __future__ import annotations

import aio_pika
import anyio
import pytest
import services

import asyncq
from asyncq import current_job
from asyncq.errors import BrokerError

from .reply_holding_proxy import ReplyHoldingProxy

pytestmark = pytest.mark.anyio


async def _messages_in(queue: str) -> int:
    connection = await aio_pika.connect(services.AMQP_URL)
    async with connection:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        count = declared.declaration_result.message_count
        assert count is not None
        return count


async def test_a_keyed_job_whose_confirm_was_lost_runs_once_after_its_retry(
    records_url: str, prefix: str
) -> None:
    proxy = ReplyHoldingProxy(5672)
    app = asyncq.App(proxy.url(records_url))
    runs: list[str] = []

    @app.task
    async def charge(order: str) -> str:
        if order == "order-1":
            runs.append(current_job().id)
        return order

    async with anyio.create_task_group() as tg:
        await tg.start(proxy.serve)
        async with app:
            # Declares the queue (a declaration's reply must come back) and opens the
            # connection; its message stays in the queue with the keyed one.
            await charge.enqueue("warm-up")
            proxy.hold()
            async with anyio.create_task_group() as first:

                async def enqueue_unanswered() -> None:
                    with pytest.raises(BrokerError):
                        await charge.options(key="order-1").enqueue("order-1")

                first.start_soon(enqueue_unanswered)
                # The message is in the queue; its confirm waits in the proxy.
                with anyio.fail_after(20):
                    while await _messages_in(f"{prefix}.default") < 2:  # noqa: ASYNC110
                        await anyio.sleep(0.05)  # polling a count: nothing to wait on
                proxy.cut()
            with anyio.fail_after(30):
                while True:
                    try:
                        job = await charge.options(key="order-1").enqueue("order-1")
                        break
                    except BrokerError:  # reconnecting
                        await anyio.sleep(0.2)  # a producer's backoff
            # The warm-up, the first copy and the retry's.
            assert await _messages_in(f"{prefix}.default") == 3
            async with app.worker(concurrency=4):
                assert await job.result(timeout=30) == "order-1"
                with anyio.fail_after(20):
                    while await _messages_in(f"{prefix}.default"):  # noqa: ASYNC110
                        await anyio.sleep(0.05)
                    stats = (await app.queue_stats(["default"]))["default"]
                    while stats.running:
                        await anyio.sleep(0.05)
                        stats = (await app.queue_stats(["default"]))["default"]
            assert runs == [job.id]
            # The key names the job that ran, and an enqueue of it now returns that job.
            assert (await charge.options(key="order-1").enqueue("order-1")).id == job.id
        tg.cancel_scope.cancel()
