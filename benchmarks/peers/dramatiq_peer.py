"""dramatiq with its Redis broker: thread-based, so the handlers are plain functions, report
through :data:`amqp_peers.common.sync_probe` (a blocking client), and the ``sleep`` job calls
``time.sleep``. The synchronous peer of the Redis comparison: ``send()`` blocks the calling
thread (here the driver's event loop) until redis-py has the reply to its enqueue script.

Worker: dramatiq's CLI, ``dramatiq peers.dramatiq_peer --processes 1 --threads N``: the
process started supervises one worker process (its child), whose N threads run the jobs and
whose memory is reported. The probe opens in a middleware's ``before_worker_boot`` hook, in
that child. dramatiq keeps no results unless its Results middleware is added (it is not),
and has no bulk enqueue (a ``group`` sends one by one).
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import dramatiq
from amqp_peers.common import sync_probe
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import Middleware

from .common import Kind, Peer, redis_url

__all__ = ["PEER", "broker"]


class ProbeMiddleware(Middleware):
    """Opens the probe in the worker process, before its consumers start."""

    def before_worker_boot(self, broker: dramatiq.Broker, worker: Any) -> None:
        sync_probe.open()

    def after_worker_shutdown(self, broker: dramatiq.Broker, worker: Any) -> None:
        sync_probe.close()


broker = RedisBroker(url=redis_url(), namespace="dramatiq-bench")
broker.add_middleware(ProbeMiddleware())
dramatiq.set_broker(broker)


@dramatiq.actor(actor_name="noop", broker=broker)
def noop() -> None:
    sync_probe.count()


@dramatiq.actor(actor_name="sleep", broker=broker)
def sleep() -> None:
    sync_probe.sleep_then_count()


@dramatiq.actor(actor_name="latency", broker=broker)
def latency(sent: float) -> None:
    sync_probe.latency(sent)


ACTORS = {"noop": noop, "sleep": sleep}


class DramatiqPeer(Peer):
    name = "dramatiq"
    distribution = "dramatiq"
    settings = (
        "--processes 1 --threads N (one worker process; N threads run the jobs)",
        "no Results middleware (dramatiq's default): results are not stored",
        "synchronous send(): W1c's 100 callers take turns on the event loop",
    )

    @asynccontextmanager
    async def producer(self) -> AsyncIterator[None]:
        yield

    async def enqueue(self, kind: Kind) -> None:
        ACTORS[kind].send()

    async def enqueue_latency(self, sent: float) -> None:
        latency.send(sent)

    def worker_command(self, concurrency: int) -> list[str]:
        return [
            *(sys.executable, "-m", "dramatiq", "peers.dramatiq_peer"),
            *("--processes", "1", "--threads", str(concurrency)),
        ]


PEER = DramatiqPeer()
