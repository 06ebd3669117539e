"""celery with its RabbitMQ transport (py-amqp through kombu).

Worker: ``celery -A amqp_peers.celery_peer worker --pool threads --concurrency N``. The
default pool, prefork, would run the jobs in N child processes, not in one worker process;
``threads`` (a documented pool) runs them in N threads of the one process started, whose
memory is reported, so the ``sleep`` job calls ``time.sleep``. The worker's prefetch is
celery's default, 4 × N (``worker_prefetch_multiplier``); messages are acknowledged when
received (celery's default, ``task_acks_late=False``). There is no result backend
(celery's default), so no result is stored.

The probe opens on the ``worker_ready`` signal, sent once the consumer is set up and
before its event loop delivers the first message. The producer publishes through one
connection per workload (``apply_async(producer=...)``): the driver deletes the virtual
host between workloads, and a fresh connection declares the queue again. Publisher
confirms are off (kombu's default) unless ``$BENCH_AMQP_CONFIRMS`` is 1
(``broker_transport_options={"confirm_publish": True}``). celery has no bulk enqueue.
W1c's callers are threads (:class:`amqp_peers.common.BlockingSend`) calling plain
``apply_async()``, as a threaded web server does: celery's producer pool hands them its
connections (``broker_pool_limit``, 10 by default), which are closed after the workload.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import version
from typing import Any

from celery import Celery
from celery.signals import worker_ready, worker_shutdown
from kombu import Producer
from peers.common import Kind, Peer

from .common import BlockingSend, amqp_url, publisher_confirms, sync_probe

__all__ = ["PEER", "app"]

app = Celery("amqp_bench", broker=amqp_url())
if publisher_confirms():
    app.conf.broker_transport_options = {"confirm_publish": True}


@worker_ready.connect
def open_probe(**kwargs: Any) -> None:
    sync_probe.open()


@worker_shutdown.connect
def close_probe(**kwargs: Any) -> None:
    sync_probe.close()


@app.task(name="noop")
def noop() -> None:
    sync_probe.count()


@app.task(name="sleep")
def sleep() -> None:
    sync_probe.sleep_then_count()


@app.task(name="latency")
def latency(sent: float) -> None:
    sync_probe.latency(sent)


TASKS = {"noop": noop, "sleep": sleep}


class CeleryPeer(BlockingSend, Peer):
    name = "celery"
    distribution = "celery"
    settings = (
        "--pool threads --concurrency N (celery's default pool, prefork, would fork N processes)",
        "W1c: caller threads (send() blocks), each sending one job untimed first",
        "publisher confirms on (confirm_publish=True)"
        if publisher_confirms()
        else "publisher confirms off (kombu's default)",
        "--loglevel WARNING (celery logs two INFO lines per task)",
    )

    def __init__(self) -> None:
        self._producer: Producer | None = None

    @property
    def version(self) -> str:
        return f"{super().version} (kombu {version('kombu')}, amqp {version('amqp')})"

    @asynccontextmanager
    async def producer(self) -> AsyncIterator[None]:
        with app.connection_for_write() as connection, connection.Producer() as producer:
            self._producer = producer
            try:
                yield
            finally:
                self._producer = None

    async def enqueue(self, kind: Kind) -> None:
        TASKS[kind].apply_async(producer=self._producer)

    def send(self, kind: Kind) -> None:
        TASKS[kind].apply_async()  # from a thread: through celery's own producer pool

    def threads_done(self) -> None:
        app.pool.force_close_all()  # the pool's connections are in a doomed virtual host

    async def enqueue_latency(self, sent: float) -> None:
        latency.apply_async((sent,), producer=self._producer)

    def worker_command(self, concurrency: int) -> list[str]:
        return [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "amqp_peers.celery_peer",
            "worker",
            "--pool",
            "threads",
            "--concurrency",
            str(concurrency),
            "--loglevel",
            "WARNING",
        ]


PEER = CeleryPeer()
