"""taskiq with taskiq-aio-pika: ``AioPikaBroker``, a direct exchange and one durable queue
consumed with acknowledgements; aio-pika opens its channels with publisher confirms, so each
``kiq()`` waits for the broker's confirm.

Two settings differ from taskiq-aio-pika's defaults, both so that it runs the same jobs the
same way as the others: ``qos`` (the consumer's prefetch, 10 by default) is set to the
worker's concurrency, as otherwise at most 10 jobs are in flight whatever
``--max-async-tasks`` says; and the queue is a classic queue, as the others' are, where
taskiq-aio-pika declares a quorum queue by default (``$BENCH_TASKIQ_QUEUE_TYPE`` =
``quorum`` keeps that default). No result backend, as taskiq's default.

Worker: taskiq's CLI, ``taskiq worker amqp_peers.taskiq_peer:broker --workers 1
--max-async-tasks N``; taskiq runs the worker in a child of the process started, which is
the one whose memory is reported. taskiq has no bulk enqueue.
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import version

from peers.common import Kind, Peer, probe, worker_concurrency
from taskiq import TaskiqEvents, TaskiqState
from taskiq_aio_pika import AioPikaBroker, Queue, QueueType

from .common import amqp_url

__all__ = ["PEER", "broker"]

QUEUE_TYPE = QueueType(os.environ.get("BENCH_TASKIQ_QUEUE_TYPE", "classic"))

broker = AioPikaBroker(
    url=amqp_url(),
    qos=worker_concurrency(),
    task_queues=[Queue(type=QUEUE_TYPE)],
)


@broker.on_event(TaskiqEvents.WORKER_STARTUP)
async def startup(state: TaskiqState) -> None:
    await probe.open()


@broker.on_event(TaskiqEvents.WORKER_SHUTDOWN)
async def shutdown(state: TaskiqState) -> None:
    await probe.close()


@broker.task(task_name="noop")
async def noop() -> None:
    await probe.count()


@broker.task(task_name="sleep")
async def sleep() -> None:
    await probe.sleep_then_count()


@broker.task(task_name="latency")
async def latency(sent: float) -> None:
    await probe.latency(sent)


TASKS = {"noop": noop, "sleep": sleep}


class TaskiqPeer(Peer):
    name = "taskiq"
    distribution = "taskiq-aio-pika"
    settings = (
        f"AioPikaBroker(qos={worker_concurrency()}): the consumer's prefetch, 10 by default,"
        " which would cap the jobs in flight below --max-async-tasks",
        f"task queue type {QUEUE_TYPE.value}"
        + (" (taskiq-aio-pika's default is quorum)" if QUEUE_TYPE != QueueType.QUORUM else ""),
        "publisher confirms on (aio-pika's default): each kiq() waits for the broker",
        "no result backend (taskiq's default): results are not stored",
        "--log-level WARNING (taskiq logs one INFO line per task)",
    )

    @property
    def version(self) -> str:
        return f"{super().version} (taskiq {version('taskiq')}, aio-pika {version('aio-pika')})"

    @asynccontextmanager
    async def producer(self) -> AsyncIterator[None]:
        await broker.startup()
        try:
            yield
        finally:
            await broker.shutdown()

    async def enqueue(self, kind: Kind) -> None:
        await TASKS[kind].kiq()

    async def enqueue_latency(self, sent: float) -> None:
        await latency.kiq(sent)

    def worker_command(self, concurrency: int) -> list[str]:
        return [
            sys.executable,
            "-m",
            "taskiq",
            "worker",
            "amqp_peers.taskiq_peer:broker",
            "--workers",
            "1",
            "--max-async-tasks",
            str(concurrency),
            "--log-level",
            "WARNING",
        ]


PEER = TaskiqPeer()
