"""What every library's module shares: settings, the probe its handlers call, the Peer base.

The driver and the worker processes it starts agree through environment variables, read
once at import: the worker commands are each library's own CLI or documented programmatic
worker, which import a module by name and cannot take our arguments.

Each handler costs the same in every library, and as little as possible, so the numbers
measure the libraries rather than the handlers: a ``noop`` job only counts itself in the
worker's memory, and the job that reaches the target writes the count and the time to the
probe's own schema, ``bench_probe``, through one asyncpg connection per worker process,
opened in the library's worker-startup hook. A ``latency`` job notes its delay in memory;
the one that completes ``$BENCH_LATENCY_TARGET`` of them writes them all in one statement.
So while a workload runs, the only statements the server sees are the libraries' own.
The startup hook also records when the worker was ready and its pid, so the driver times
from the worker's start, not from the interpreter's, and reads the right process's peak RSS.

No Redis here (the probe of ``redis_compare.py`` writes to Redis): neither asyncq's
virtualenv nor the peers' needs redis-py.
"""

from __future__ import annotations

import abc
import asyncio
import os
import time
from contextlib import AbstractAsyncContextManager
from importlib.metadata import PackageNotFoundError, version
from typing import Any, ClassVar, Literal

import asyncpg

__all__ = [
    "PROBE_SCHEMA",
    "SLEEP_SECONDS",
    "Kind",
    "Peer",
    "Probe",
    "Rollback",
    "concurrency",
    "distribution_version",
    "dsn",
    "orders_ddl",
    "probe",
]

Kind = Literal["noop", "sleep"]
"""A job without arguments: ``noop`` counts itself done; ``sleep`` waits, then counts."""

SLEEP_SECONDS = 0.01
"""What a ``sleep`` job waits (W4)."""

DSN = "postgresql://postgres@127.0.0.1:5432/test"
"""The server and database every library uses unless ``$BENCH_PG_DSN`` names another."""

PROBE_SCHEMA = "bench_probe"
"""The probe's tables; no library here writes to it."""

PROBE_DDL = f"""CREATE SCHEMA IF NOT EXISTS {PROBE_SCHEMA};
CREATE TABLE IF NOT EXISTS {PROBE_SCHEMA}.ready (pid int NOT NULL, at float8 NOT NULL);
CREATE TABLE IF NOT EXISTS {PROBE_SCHEMA}.done (runs int NOT NULL, at float8 NOT NULL);
CREATE TABLE IF NOT EXISTS {PROBE_SCHEMA}.latency (seconds float8 NOT NULL);"""
"""``ready``: one row per worker start (epoch time, pid); ``done``: the count and the time,
written by the job that reached ``$BENCH_TARGET``; ``latency``: (start - enqueue) seconds of
each W3 job."""


def dsn() -> str:
    """The database every library uses: ``$BENCH_PG_DSN``."""
    return os.environ.get("BENCH_PG_DSN", DSN)


def concurrency() -> int:
    """Jobs one worker process runs at the same time: ``$BENCH_CONCURRENCY``."""
    return int(os.environ.get("BENCH_CONCURRENCY", "100"))


def distribution_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "?"


def orders_ddl(schema: str) -> str:
    """W5's business table, in the library's own schema."""
    return f"""CREATE SCHEMA IF NOT EXISTS {schema};
CREATE TABLE {schema}.orders (
    id bigint PRIMARY KEY,
    amount int NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);"""


class Rollback(Exception):
    """Raised inside W5's last transaction, after its enqueue, so that it rolls back."""


class Probe:
    """The handlers' side of the measurement: one statement per worker run, not per job."""

    def __init__(self) -> None:
        self._conn: asyncpg.Connection | None = None
        self._lock: asyncio.Lock | None = None
        self.target = int(os.environ.get("BENCH_TARGET", "0"))
        self.latency_target = int(os.environ.get("BENCH_LATENCY_TARGET", "0"))
        self.runs = 0
        self.latencies: list[float] = []

    async def open(self) -> None:
        """Call from the library's worker-startup hook, on the worker's event loop."""
        self._lock = asyncio.Lock()  # the handlers run at once; one connection, one statement
        self._conn = await asyncpg.connect(
            dsn(), server_settings={"application_name": "bench-probe"}
        )
        await self._conn.execute(
            f"INSERT INTO {PROBE_SCHEMA}.ready (pid, at) VALUES ($1, $2)",
            os.getpid(),
            time.time(),
        )

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    async def _execute(self, query: str, *args: object) -> None:
        if self._conn is None or self._lock is None:
            raise RuntimeError("the probe is not open: the worker-startup hook did not run")
        async with self._lock:
            await self._conn.execute(query, *args)

    async def count(self) -> None:
        """A ``noop`` job's whole work. The job that reaches the target stores the count and
        the time; any run past it (a duplicate delivery) updates the count."""
        self.runs += 1
        runs = self.runs
        if runs == self.target:
            await self._execute(
                f"INSERT INTO {PROBE_SCHEMA}.done (runs, at) VALUES ($1, $2)", runs, time.time()
            )
        elif runs > self.target:
            await self._execute(f"UPDATE {PROBE_SCHEMA}.done SET runs = greatest(runs, $1)", runs)

    async def sleep_then_count(self) -> None:
        await asyncio.sleep(SLEEP_SECONDS)
        await self.count()

    async def latency(self, sent: float) -> None:
        """A ``latency`` job: how long after its enqueue (``sent``) it started."""
        self.latencies.append(time.time() - sent)
        if len(self.latencies) == self.latency_target:
            await self._execute(
                f"INSERT INTO {PROBE_SCHEMA}.latency SELECT unnest($1::float8[])",
                self.latencies,
            )


probe = Probe()
"""The one probe of a worker process; each library's handlers call it."""


class Peer(abc.ABC):
    """One library, as the driver drives it."""

    name: ClassVar[str]
    distribution: ClassVar[str]
    """The PyPI distribution whose version is reported."""
    driver: ClassVar[str]
    """The PostgreSQL driver's distribution (asyncpg, psycopg), reported beside it."""
    schema: ClassVar[str]
    """The PostgreSQL schema that holds the library's tables (and W5's ``orders``)."""
    has_bulk: ClassVar[bool] = False
    """Whether the library has a bulk enqueue (one statement per batch)."""
    has_transaction: ClassVar[bool] = False
    """Whether the library can enqueue in the caller's transaction (W5)."""
    settings: ClassVar[tuple[str, ...]] = ()
    """Settings that differ from the library's defaults, and why; printed with the results."""

    @property
    def version(self) -> str:
        return distribution_version(self.distribution)

    @property
    def client(self) -> str:
        return f"{self.driver} {distribution_version(self.driver)}"

    def skip_reason(self) -> str | None:
        """Why this library cannot run here (None: it can)."""
        return None

    async def drop(self, conn: asyncpg.Connection) -> None:
        """Remove the library's tables, and everything else in its schema."""
        await conn.execute(f"DROP SCHEMA IF EXISTS {self.schema} CASCADE")

    async def install(self, conn: asyncpg.Connection) -> None:
        """Create the library's tables in its schema, as its own install does; the driver
        calls it after :meth:`drop`, before each workload."""
        return None

    @abc.abstractmethod
    async def job_count(self, conn: asyncpg.Connection) -> int:
        """How many jobs the library's tables hold (W5 checks what was committed)."""

    @abc.abstractmethod
    def producer(self) -> AbstractAsyncContextManager[None]:
        """Open the producer side (connections, pools) for one workload."""

    @abc.abstractmethod
    async def enqueue(self, kind: Kind) -> None:
        """Send one job, awaited until the library says it is stored."""

    async def enqueue_bulk(self, kind: Kind, count: int) -> None:
        """Send ``count`` jobs with the library's bulk enqueue (only if ``has_bulk``)."""
        raise NotImplementedError(f"{self.name} has no bulk enqueue")

    @abc.abstractmethod
    async def enqueue_latency(self, sent: float) -> None:
        """Send one ``latency`` job carrying its enqueue time."""

    def business_connection(self) -> AbstractAsyncContextManager[Any]:
        """W5: a connection of the application's own (asyncpg or psycopg, as the library
        takes it), inside :meth:`producer`."""
        raise NotImplementedError(f"{self.name} cannot enqueue in the caller's transaction")

    async def enqueue_with_order(self, conn: Any, order_id: int, *, fail: bool = False) -> None:
        """W5: in one transaction on ``conn``, insert order ``order_id`` into the schema's
        ``orders`` and enqueue a ``noop`` job; commit. With ``fail``, raise
        :class:`Rollback` after the enqueue instead, so neither is kept."""
        raise NotImplementedError(f"{self.name} cannot enqueue in the caller's transaction")

    @abc.abstractmethod
    def worker_command(self, concurrency: int) -> list[str]:
        """The command (run from ``benchmarks/``) that starts one worker process."""
