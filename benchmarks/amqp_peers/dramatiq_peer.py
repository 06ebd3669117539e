"""dramatiq with its RabbitMQ broker (pika): thread-based, so the handlers are plain
functions and the ``sleep`` job calls ``time.sleep``.

Worker: dramatiq's CLI, ``dramatiq amqp_peers.dramatiq_peer --processes 1 --threads N``:
the process started supervises one worker process (its child), whose N threads run the
jobs and whose memory is reported; the worker's prefetch is dramatiq's default, 2 × N.
The probe opens in a middleware's ``before_worker_boot`` hook, in that child, before its
consumers start. ``send()`` blocks until pika has written the message; with
``$BENCH_AMQP_CONFIRMS`` = 1 the broker is built with ``confirm_delivery=True`` so it waits
for RabbitMQ's confirm. dramatiq has no bulk enqueue (a ``group`` sends one by one).
W1c's callers are threads (:class:`amqp_peers.common.BlockingSend`), each with the
connection of its own that dramatiq keeps per thread.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import version

from dramatiq.brokers.rabbitmq import RabbitmqBroker
from peers import dramatiq_actors
from peers.common import Kind, Peer

from .common import BlockingSend, amqp_url, publisher_confirms

__all__ = ["PEER", "broker"]


broker = RabbitmqBroker(url=amqp_url(), confirm_delivery=publisher_confirms())
ACTORS_ON_BROKER = dramatiq_actors.on(broker)
ACTORS = ACTORS_ON_BROKER.by_kind
latency = ACTORS_ON_BROKER.latency


class DramatiqPeer(BlockingSend, Peer):
    name = "dramatiq"
    distribution = "dramatiq"
    settings = (
        "--processes 1 --threads N (one worker process; N threads run the jobs)",
        "W1c: caller threads (send() blocks), each sending one job untimed first",
        "publisher confirms on (confirm_delivery=True)"
        if publisher_confirms()
        else "publisher confirms off (dramatiq's default, confirm_delivery=False)",
    )

    @property
    def version(self) -> str:
        return f"{super().version} (pika {version('pika')})"

    @asynccontextmanager
    async def producer(self) -> AsyncIterator[None]:
        try:
            yield
        finally:
            # The driver deletes the virtual host between workloads, which a long-lived
            # producer never expects: drop this thread's connection, and forget which
            # queues were declared, so the next workload declares them again.
            broker.close()
            del broker.connection
            broker.queues_pending.update(broker.queues)

    async def enqueue(self, kind: Kind) -> None:
        ACTORS[kind].send()

    def send(self, kind: Kind) -> None:
        ACTORS[kind].send()

    def thread_done(self) -> None:
        del broker.connection  # the thread's own connection (dramatiq keeps one per thread)

    async def enqueue_latency(self, sent: float) -> None:
        latency.send(sent)

    def worker_command(self, concurrency: int) -> list[str]:
        return [
            sys.executable,
            "-m",
            "dramatiq",
            "amqp_peers.dramatiq_peer",
            "--processes",
            "1",
            "--threads",
            str(concurrency),
        ]


PEER = DramatiqPeer()
