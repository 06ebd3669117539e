"""saq: a job is a key; its id goes on a list that workers take from with BLMOVE.

Worker: saq's CLI, ``saq peers.saq_peer.SETTINGS`` (it logs at WARNING unless ``-v``).
saq has no bulk enqueue (``Queue.map`` sends one call per job, then waits for the results).
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from saq import Queue

from .common import Kind, Peer, probe, redis_url, worker_concurrency

__all__ = ["PEER", "SETTINGS"]


async def noop(ctx: dict[str, Any]) -> None:
    await probe.count()


async def sleep(ctx: dict[str, Any]) -> None:
    await probe.sleep_then_count()


async def latency(ctx: dict[str, Any], *, sent: float) -> None:
    await probe.latency(sent)


async def startup(ctx: dict[str, Any]) -> None:
    await probe.open()


async def shutdown(ctx: dict[str, Any]) -> None:
    await probe.close()


SETTINGS: dict[str, Any] = {
    "queue": Queue.from_url(redis_url()),
    "functions": [noop, sleep, latency],
    "concurrency": worker_concurrency(),
    "startup": startup,
    "shutdown": shutdown,
}
"""Read by saq's CLI; the names are saq's ``Worker`` arguments."""


class SaqPeer(Peer):
    name = "saq"
    distribution = "saq"

    def __init__(self) -> None:
        self._queue: Queue | None = None

    @asynccontextmanager
    async def producer(self) -> AsyncIterator[None]:
        self._queue = Queue.from_url(redis_url())
        await self._queue.connect()
        try:
            yield
        finally:
            await self._queue.disconnect()
            self._queue = None

    @property
    def queue(self) -> Queue:
        assert self._queue is not None, "use inside producer()"
        return self._queue

    async def enqueue(self, kind: Kind) -> None:
        await self.queue.enqueue(kind)

    async def enqueue_latency(self, sent: float) -> None:
        await self.queue.enqueue("latency", sent=sent)

    def worker_command(self, concurrency: int) -> list[str]:
        return [sys.executable, "-m", "saq", "peers.saq_peer.SETTINGS"]


PEER = SaqPeer()
