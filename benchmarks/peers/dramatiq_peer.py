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

from dramatiq.brokers.redis import RedisBroker

from . import dramatiq_actors
from .common import Kind, Peer, redis_url

__all__ = ["PEER", "broker"]


broker = RedisBroker(url=redis_url(), namespace="dramatiq-bench")
ACTORS_ON_BROKER = dramatiq_actors.on(broker)
ACTORS = ACTORS_ON_BROKER.by_kind
latency = ACTORS_ON_BROKER.latency


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
