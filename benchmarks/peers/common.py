"""What every library's module shares: settings, the probe its handlers call, the Peer base.

The driver and the worker processes it starts agree through environment variables, read
once at import: the worker commands are each library's own CLI (or documented programmatic
worker), which import a module by name and cannot take our arguments.

Each handler costs the same in every library, and as little as possible, so the numbers
measure the libraries rather than the handlers: a ``noop`` job only counts itself in the
worker's memory; the job that reaches the target writes the count and the time to Redis
through one ``redis.asyncio`` client (hiredis parser) per worker process, opened in the
library's worker-startup hook. A ``latency`` job does one RPUSH. That hook also records
when the worker was ready and its pid, so the driver times from the worker's start, not
from the interpreter's, and reads the right process's peak RSS (taskiq runs its jobs in a
child of the process the driver starts).
"""

from __future__ import annotations

import abc
import asyncio
import os
import time
from contextlib import AbstractAsyncContextManager
from importlib.metadata import PackageNotFoundError, version
from typing import ClassVar, Literal

import redis.asyncio as aioredis

__all__ = [
    "BULK_KINDS",
    "COUNTER",
    "DONE",
    "LATENCIES",
    "READY",
    "SLEEP_SECONDS",
    "Kind",
    "Peer",
    "Probe",
    "probe",
    "redis_url",
    "worker_concurrency",
]

Kind = Literal["noop", "sleep"]
"""A job without arguments: ``noop`` counts itself done; ``sleep`` waits, then counts."""

BULK_KINDS: tuple[Kind, ...] = ("noop", "sleep")

SLEEP_SECONDS = 0.01
"""What a ``sleep`` job waits (W4)."""

# The probe's keys; no library here writes under "probe:".
READY = "probe:ready"
"""Hash set by the worker-startup hook: ``time`` (epoch seconds) and ``pid``."""
COUNTER = "probe:count"
"""How many ``noop`` and ``sleep`` jobs ran, written once the target is reached."""
DONE = "probe:done"
"""Set to the epoch time by the job whose INCR reached ``$BENCH_TARGET``."""
LATENCIES = "probe:latency"
"""List of (start time - enqueue time) in seconds, one per ``latency`` job (W3)."""


def redis_url() -> str:
    """The Redis database every library uses: ``$BENCH_REDIS_URL``."""
    return os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")


def worker_concurrency() -> int:
    """Jobs one worker process runs at the same time: ``$BENCH_CONCURRENCY``."""
    return int(os.environ.get("BENCH_CONCURRENCY", "100"))


class Probe:
    """The handlers' side of the measurement: one Redis command per job."""

    def __init__(self) -> None:
        self._redis: aioredis.Redis | None = None
        self.target = int(os.environ.get("BENCH_TARGET", "0"))
        self.runs = 0

    async def open(self) -> None:
        """Call from the library's worker-startup hook, on the worker's event loop."""
        self._redis = aioredis.Redis.from_url(redis_url())
        await self._redis.hset(READY, mapping={"time": repr(time.time()), "pid": os.getpid()})

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None

    @property
    def redis(self) -> aioredis.Redis:
        if self._redis is None:
            raise RuntimeError("the probe is not open: the worker-startup hook did not run")
        return self._redis

    async def count(self) -> None:
        """A ``noop`` job's whole work. The job that reaches the target stores the count and
        the time; any run past it (a duplicate delivery) updates the count."""
        self.runs += 1
        if self.runs == self.target:
            await self.redis.mset({COUNTER: self.runs, DONE: repr(time.time())})
        elif self.runs > self.target:
            await self.redis.set(COUNTER, self.runs)

    async def sleep_then_count(self) -> None:
        await asyncio.sleep(SLEEP_SECONDS)
        await self.count()

    async def latency(self, sent: float) -> None:
        """A ``latency`` job: how long after its enqueue (``sent``) it started."""
        started = time.time()
        await self.redis.rpush(LATENCIES, repr(started - sent))


probe = Probe()
"""The one probe of a worker process; each library's handlers call it."""


class Peer(abc.ABC):
    """One library, as the driver drives it."""

    name: ClassVar[str]
    distribution: ClassVar[str]
    """The PyPI distribution whose version is reported."""
    has_bulk: ClassVar[bool] = False
    """Whether the library has a bulk (pipelined) enqueue."""
    settings: ClassVar[tuple[str, ...]] = ()
    """Settings that differ from the library's defaults, and why; printed with the results."""

    @property
    def version(self) -> str:
        try:
            return version(self.distribution)
        except PackageNotFoundError:
            return "?"

    def skip_reason(self) -> str | None:
        """Why this library cannot run here (None: it can)."""
        return None

    @abc.abstractmethod
    def producer(self) -> AbstractAsyncContextManager[None]:
        """Open the producer side (connections, scripts) for one workload."""

    @abc.abstractmethod
    async def enqueue(self, kind: Kind) -> None:
        """Send one job, awaited until the library says it is stored."""

    async def enqueue_bulk(self, kind: Kind, count: int) -> None:
        """Send ``count`` jobs with the library's bulk enqueue (only if ``has_bulk``)."""
        raise NotImplementedError(f"{self.name} has no bulk enqueue")

    @abc.abstractmethod
    async def enqueue_latency(self, sent: float) -> None:
        """Send one ``latency`` job carrying its enqueue time."""

    @abc.abstractmethod
    def worker_command(self, concurrency: int) -> list[str]:
        """The command (run from ``benchmarks/``) that starts one worker process."""
