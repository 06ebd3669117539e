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
from importlib.metadata import version

from peers.common import worker_concurrency
from peers.taskiq_jobs import TaskiqPeer
from taskiq_aio_pika import AioPikaBroker, Queue, QueueType

from .common import amqp_url

__all__ = ["PEER", "broker"]

QUEUE_TYPE = QueueType(os.environ.get("BENCH_TASKIQ_QUEUE_TYPE", "classic"))

broker = AioPikaBroker(
    url=amqp_url(),
    qos=worker_concurrency(),
    task_queues=[Queue(type=QUEUE_TYPE)],
)


class AmqpTaskiqPeer(TaskiqPeer):
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


PEER = AmqpTaskiqPeer(broker, "amqp_peers.taskiq_peer:broker")
