"""arq: a job is a key plus a member of a sorted set; the worker polls the set.

Worker: arq's CLI, ``arq peers.arq_peer.WorkerSettings``, with ``max_jobs`` as the
concurrency and arq's per-job INFO log lines turned down to WARNING. ``poll_delay`` stays
arq's default (0.5 s) unless ``$BENCH_ARQ_POLL_DELAY`` names another: each poll starts at
most ``queue_read_limit`` jobs (500 at ``max_jobs=100``), so the default caps a worker at
about 1,000 jobs/s and sets the latency floor.
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from arq.connections import ArqRedis, RedisSettings, create_pool

from .common import Kind, Peer, probe, redis_url, worker_concurrency

__all__ = ["PEER", "LOG_CONFIG", "WorkerSettings"]

REDIS = RedisSettings.from_dsn(redis_url())
DEFAULT_POLL_DELAY = 0.5
POLL_DELAY = float(os.environ.get("BENCH_ARQ_POLL_DELAY") or DEFAULT_POLL_DELAY)


async def noop(ctx: dict[str, Any]) -> None:
    await probe.count()


async def sleep(ctx: dict[str, Any]) -> None:
    await probe.sleep_then_count()


async def latency(ctx: dict[str, Any], sent: float) -> None:
    await probe.latency(sent)


async def startup(ctx: dict[str, Any]) -> None:
    await probe.open()


async def shutdown(ctx: dict[str, Any]) -> None:
    await probe.close()


class WorkerSettings:
    """Read by arq's CLI; the names are arq's ``Worker`` arguments."""

    functions = [noop, sleep, latency]
    redis_settings = REDIS
    max_jobs = worker_concurrency()
    poll_delay = POLL_DELAY
    on_startup = startup
    on_shutdown = shutdown


LOG_CONFIG: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler", "level": "WARNING"}},
    "loggers": {"arq": {"handlers": ["stderr"], "level": "WARNING"}},
}
"""For ``--custom-log-dict``: arq's default config logs two INFO lines per job."""


class ArqPeer(Peer):
    name = "arq"
    distribution = "arq"
    settings = ("logging at WARNING (arq logs two INFO lines per job)",) + (
        (f"poll_delay={POLL_DELAY:g} s (default {DEFAULT_POLL_DELAY:g} s)",)
        if POLL_DELAY != DEFAULT_POLL_DELAY
        else ()
    )

    def __init__(self) -> None:
        self._pool: ArqRedis | None = None

    @asynccontextmanager
    async def producer(self) -> AsyncIterator[None]:
        self._pool = await create_pool(REDIS)
        try:
            yield
        finally:
            await self._pool.aclose()
            self._pool = None

    @property
    def pool(self) -> ArqRedis:
        assert self._pool is not None, "use inside producer()"
        return self._pool

    async def enqueue(self, kind: Kind) -> None:
        await self.pool.enqueue_job(kind)

    async def enqueue_latency(self, sent: float) -> None:
        await self.pool.enqueue_job("latency", sent)

    def worker_command(self, concurrency: int) -> list[str]:
        return [
            sys.executable,
            "-m",
            "arq",
            "peers.arq_peer.WorkerSettings",
            "--custom-log-dict",
            "peers.arq_peer.LOG_CONFIG",
        ]


PEER = ArqPeer()
