"""Job libraries side by side on one local PostgreSQL: asyncq, pgqueuer, procrastinate.

    .venv-bench-pg/bin/python benchmarks/postgres_compare.py [--quick] [--libs pgqueuer] [--json]

The workloads, worker handling and report of ``redis_compare.py``, on PostgreSQL at
127.0.0.1:5432, user postgres, database ``test`` (``--dsn``), with no Redis: the handlers'
probe writes to a schema of its own, ``bench_probe`` (see ``pg_peers/common.py``), so that
while a workload runs the server sees the libraries' statements only. Each library keeps
its tables in a schema of its own, ``bench_asyncq`` (asyncq's URL option ``?schema=``),
``bench_pgqueuer`` (pgqueuer's ``PGQUEUER_SCHEMA``) and ``bench_procrastinate`` (the
connections' ``search_path``), dropped and installed again (by the library's own install)
before each workload, so every workload starts on empty tables and no run sees another's
jobs; the schemas, the probe's included, are dropped at the end.

asyncq runs from a virtualenv of its own with a plain ``pip install -e '.[postgres]'``
(``.venv-bench-pg-asyncq`` by default, ``--asyncq-python``): its workloads run in a child
process of this script under that interpreter, and its results join the peers' in one
report. The peers run in this interpreter (``.venv-bench-pg``, from
``requirements-postgres-peers.txt``).

Each library gets the same jobs and one worker process at ``--concurrency``. In this order:

W1  enqueue: ``--enqueue-jobs`` jobs, (a) one await per job, (c) ``--callers`` concurrent
    callers (100), each with one await per job, as a web server's requests enqueue, (b) the
    library's bulk enqueue in batches of ``--batch`` (asyncq ``Task.enqueue_many``,
    pgqueuer ``Queries.enqueue`` with lists, procrastinate ``Task.batch_defer_async``);
W2  drain: ``--jobs`` no-op jobs enqueued first, then one worker process is started; timed
    from the moment the worker's startup hook runs until the last job has counted itself
    done; plus the worker process's peak RSS (VmHWM) at the end;
W3  enqueue-to-start latency: with a worker running, ``--rate`` jobs/s for ``--duration``
    seconds, each carrying its enqueue time (``time.time()``); each job notes when it
    started; p50 and p99;
W4  ``--sleep-jobs`` jobs of ``await asyncio.sleep(0.01)``, timed like W2, against the ideal
    jobs x 10 ms / concurrency;
W5  transactional enqueue: ``--tx-jobs`` transactions one after another on one connection
    of the application's own, each ``INSERT``ing a row into ``<schema>.orders`` and
    enqueueing one job in the same transaction, then committing; jobs/s. Then one more that
    raises after its enqueue, and the tables must hold exactly ``--tx-jobs`` orders and jobs
    (the rolled-back job is not there). asyncq: ``task.options(connection=conn).enqueue()``
    on an asyncpg connection; pgqueuer: ``Queries`` over the asyncpg connection; procrastinate:
    ``task.configure(connection=conn).defer_async()`` on a psycopg connection.

Worker settings: asyncq at its defaults (``python -m pg_peers.asyncq_peer``:
``app.run_worker``); pgqueuer at the fast settings of its performance-tuning guide
(``batch_size`` 50 (``--pgqueuer-batch``), ``max_concurrent_tasks`` = the concurrency, an
asyncpg pool), run by ``pgqueuer.run()`` under ``asyncio.run``, stock asyncio like the others
(``--pgqueuer-loop uvloop``: its CLI ``pgq run``, which runs on uvloop); procrastinate's
``app.run_worker_async(concurrency=N)`` with a pool of 10. Every producer has a pool of 10
connections. Each peer's module says why, and the report lists every setting changed.

After each workload the worker gets SIGTERM, and SIGKILL if it has not exited after
``--stop-timeout`` seconds; Ctrl-C (or SIGTERM) stops the run the same way, a second one
kills the workers at once.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import anyio
import asyncpg
import bench_workers
import pg_peers
from bench_workers import (
    WorkloadError,
    batches,
    kill_all_workers,
    number,
    peak_rss_mib,
    percentile,
    rate,
)
from pg_peers.common import DSN, PROBE_DDL, PROBE_SCHEMA, SLEEP_SECONDS, Kind, Peer, Rollback
from pg_peers.common import orders_ddl as make_orders_ddl

T = TypeVar("T")

HERE = Path(__file__).resolve().parent
ASYNCQ_PYTHON = HERE.parent / ".venv-bench-pg-asyncq" / "bin" / "python"
"""Where asyncq's own virtualenv is looked for when ``--asyncq-python`` names none."""
WARMUP_JOBS = 50
"""W3: jobs run (and not measured) before the latency jobs, so connections are open."""
FILL_CONCURRENCY = 100
"""Untimed pre-enqueue without a bulk API: this many single enqueues in flight at once."""


@dataclass(frozen=True, slots=True)
class Config:
    libs: list[str]
    dsn: str
    concurrency: int
    enqueue_jobs: int
    jobs: int
    rate: float
    duration: float
    sleep_jobs: int
    tx_jobs: int
    batch: int
    callers: int
    stop_timeout: float
    pgqueuer_batch: int
    pgqueuer_loop: str
    workloads: list[str]
    """The labels' first words (W1 ... W5) of the workloads to run."""
    asyncq_python: str
    """The interpreter asyncq's workloads run under (this one's own: in this process)."""
    log_dir: Path

    @property
    def sleep_ideal(self) -> float:
        return self.sleep_jobs * SLEEP_SECONDS / self.concurrency


@dataclass(slots=True)
class Result:
    """One library's numbers; None where a workload was skipped or failed."""

    library: str
    version: str = ""
    client: str = ""
    """The PostgreSQL driver the library ran on ("asyncpg 0.32.0")."""
    skipped: str | None = None
    has_bulk: bool = False
    has_transaction: bool = False
    enqueue_rate: float | None = None
    concurrent_rate: float | None = None
    bulk_rate: float | None = None
    drain_rate: float | None = None
    drain_seconds: float | None = None
    peak_rss_mib: float | None = None
    latency_p50_ms: float | None = None
    latency_p99_ms: float | None = None
    latency_jobs: int | None = None
    latency_rate: float | None = None
    sleep_seconds: float | None = None
    transaction_rate: float | None = None
    worker_startup_seconds: dict[str, float] = field(default_factory=dict)
    settings: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


# -- the probe's tables ------------------------------------------------------------------------
class ProbeReader:
    """The driver's side of the probe, and its one connection for resets and counts."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def setup(self) -> None:
        await self.conn.execute(PROBE_DDL)

    async def flush(self) -> None:
        await self.conn.execute(
            f"TRUNCATE {PROBE_SCHEMA}.ready, {PROBE_SCHEMA}.done, {PROBE_SCHEMA}.latency"
        )

    async def drop(self) -> None:
        await self.conn.execute(f"DROP SCHEMA IF EXISTS {PROBE_SCHEMA} CASCADE")

    async def ready(self) -> tuple[float, int] | None:
        row = await self.conn.fetchrow(
            f"SELECT at, pid FROM {PROBE_SCHEMA}.ready ORDER BY at LIMIT 1"
        )
        return None if row is None else (float(row["at"]), int(row["pid"]))

    async def done(self) -> tuple[int, float] | None:
        row = await self.conn.fetchrow(f"SELECT runs, at FROM {PROBE_SCHEMA}.done LIMIT 1")
        return None if row is None else (int(row["runs"]), float(row["at"]))

    async def latencies(self) -> list[float]:
        rows = await self.conn.fetch(f"SELECT seconds FROM {PROBE_SCHEMA}.latency")
        return sorted(float(r["seconds"]) for r in rows)


async def reset(peer: Peer, probe: ProbeReader) -> None:
    """An empty installation of the library, an empty probe, and a checkpoint: after one,
    the first change to each page writes the whole page to the WAL (full_page_writes), so a
    workload that a checkpoint happened to precede pays more than one that it did not.
    Every workload starts right after one, on an equal footing."""
    await peer.drop(probe.conn)
    await peer.install(probe.conn)
    await probe.flush()
    await probe.conn.execute("CHECKPOINT")


# -- worker processes --------------------------------------------------------------------------
def worker_environment(cfg: Config) -> dict[str, str]:
    """What the peer modules read at import, in this process as in the workers."""
    return {
        "BENCH_PG_DSN": cfg.dsn,
        "BENCH_CONCURRENCY": str(cfg.concurrency),
        "BENCH_PGQUEUER_BATCH": str(cfg.pgqueuer_batch),
        "BENCH_PGQUEUER_LOOP": cfg.pgqueuer_loop,
    }


class WorkerProcess(bench_workers.WorkerProcess):
    """One library's worker process for one workload."""

    def __init__(
        self, peer: Peer, cfg: Config, *, target: int, label: str, latency_target: int = 0
    ) -> None:
        env = {
            **worker_environment(cfg),
            "BENCH_TARGET": str(target),
            "BENCH_LATENCY_TARGET": str(latency_target),
        }
        super().__init__(
            peer.worker_command(cfg.concurrency), env, cwd=HERE,
            log_path=cfg.log_dir / f"{peer.name}-{label}.log", stop_timeout=cfg.stop_timeout,
        )  # fmt: skip

    async def ready(self, probe: ProbeReader, timeout: float = 60.0) -> tuple[float, int]:
        """Wait for the worker's startup hook: returns (epoch time it ran, worker pid)."""
        return await self.wait_ready(probe.ready, timeout)


# -- workloads ---------------------------------------------------------------------------------
async def fill(peer: Peer, kind: Kind, count: int, batch: int) -> None:
    """Enqueue ``count`` jobs as fast as the library allows (not timed)."""
    if peer.has_bulk:
        for size in batches(count, batch):
            await peer.enqueue_bulk(kind, size)
        return
    for size in batches(count, FILL_CONCURRENCY):
        async with anyio.create_task_group() as tg:
            for _ in range(size):
                tg.start_soon(peer.enqueue, kind)


async def wait_for(
    what: str,
    check: Callable[[], Awaitable[T | None]],
    worker: WorkerProcess,
    timeout: float,
    interval: float = 0.01,
) -> T:
    """Poll ``check()`` until it returns something other than None, the worker dies, or
    ``timeout`` passes."""
    with anyio.move_on_after(timeout):
        while True:
            value = await check()
            if value is not None:
                return value
            worker.check_alive()
            await anyio.sleep(interval)
    raise WorkloadError(f"{what}: not done after {timeout:.0f} s; see {worker.log_path}")


async def enqueue_workload(peer: Peer, probe: ProbeReader, cfg: Config, res: Result) -> None:
    """W1: one await per job; concurrent callers; then the bulk enqueue, if any."""
    n = cfg.enqueue_jobs
    async with peer.producer():
        start = time.perf_counter()
        for _ in range(n):
            await peer.enqueue("noop")
        res.enqueue_rate = n / (time.perf_counter() - start)
    await reset(peer, probe)
    async with peer.producer():
        res.concurrent_rate = await concurrent_enqueues(peer, n, cfg.callers)
    if not peer.has_bulk:
        return
    await reset(peer, probe)
    async with peer.producer():
        start = time.perf_counter()
        for size in batches(n, cfg.batch):
            await peer.enqueue_bulk("noop", size)
        res.bulk_rate = n / (time.perf_counter() - start)


async def concurrent_enqueues(peer: Peer, n: int, callers: int) -> float:
    """W1c: ``n`` single enqueues by ``callers`` tasks at once, each awaiting its own before
    sending the next; jobs/s."""
    left = n

    async def caller() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await peer.enqueue("noop")

    start = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(min(callers, n)):
            tg.start_soon(caller)
    return n / (time.perf_counter() - start)


async def timed_run(
    peer: Peer, probe: ProbeReader, cfg: Config, res: Result, kind: Kind, n: int, label: str
) -> tuple[float, float | None]:
    """Enqueue ``n`` jobs, then start a worker; seconds from its start until the last job
    counted itself done, and the worker's peak RSS in MiB."""
    async with peer.producer():
        await fill(peer, kind, n, cfg.batch)
    async with WorkerProcess(peer, cfg, target=n, label=label) as worker:
        started, pid = await worker.ready(probe)
        res.worker_startup_seconds[label] = round(started - worker.spawned_at, 3)
        _, finished = await wait_for(f"{label} of {n} jobs", probe.done, worker, 60 + n / 50, 0.02)
        rss = peak_rss_mib(pid)
        count, _ = await probe.done() or (0, 0.0)
    if count != n:
        res.notes.append(f"{label}: {count} job runs counted for {n} jobs")
    if worker.killed:
        res.notes.append(f"{label}: worker ignored SIGTERM for {cfg.stop_timeout:.0f} s; killed")
    return finished - started, rss


async def drain_workload(peer: Peer, probe: ProbeReader, cfg: Config, res: Result) -> None:
    """W2: drain pre-enqueued no-op jobs with one worker process."""
    seconds, rss = await timed_run(peer, probe, cfg, res, "noop", cfg.jobs, "drain")
    res.drain_seconds = seconds
    res.drain_rate = cfg.jobs / seconds
    res.peak_rss_mib = rss


async def sleep_workload(peer: Peer, probe: ProbeReader, cfg: Config, res: Result) -> None:
    """W4: jobs that each sleep 10 ms, run at ``concurrency``."""
    seconds, _ = await timed_run(peer, probe, cfg, res, "sleep", cfg.sleep_jobs, "sleep")
    res.sleep_seconds = seconds


async def latency_workload(peer: Peer, probe: ProbeReader, cfg: Config, res: Result) -> None:
    """W3: enqueue at a fixed rate with a worker running; time from enqueue to start."""
    total = max(1, round(cfg.rate * cfg.duration))
    async with (
        peer.producer(),
        WorkerProcess(
            peer, cfg, target=WARMUP_JOBS, label="latency", latency_target=total
        ) as worker,
    ):
        started, _ = await worker.ready(probe)
        res.worker_startup_seconds["latency"] = round(started - worker.spawned_at, 3)
        for _ in range(WARMUP_JOBS):
            await peer.enqueue("noop")
        await wait_for("latency warm-up", probe.done, worker, 30)

        # Paced against the schedule, not the previous send, so the rate does not drift.
        begin = time.perf_counter()
        for i in range(total):
            delay = begin + i / cfg.rate - time.perf_counter()
            if delay > 0:
                await anyio.sleep(delay)
            await peer.enqueue_latency(time.time())
        res.latency_rate = total / (time.perf_counter() - begin)

        async def recorded() -> list[float] | None:
            values = await probe.latencies()
            return values or None

        values = await wait_for("latency jobs", recorded, worker, 30 + cfg.duration)
    if worker.killed:
        res.notes.append(f"latency: worker ignored SIGTERM for {cfg.stop_timeout:.0f} s; killed")
    res.latency_jobs = len(values)
    res.latency_p50_ms = percentile(values, 0.50) * 1000
    res.latency_p99_ms = percentile(values, 0.99) * 1000


async def transaction_workload(peer: Peer, probe: ProbeReader, cfg: Config, res: Result) -> None:
    """W5: an order row and a job in one transaction, one transaction after another."""
    if not peer.has_transaction:
        return
    n = cfg.tx_jobs
    await probe.conn.execute(make_orders_ddl(peer.schema))
    async with peer.producer(), peer.business_connection() as conn:
        start = time.perf_counter()
        for order_id in range(n):
            await peer.enqueue_with_order(conn, order_id)
        res.transaction_rate = n / (time.perf_counter() - start)
        try:
            await peer.enqueue_with_order(conn, n, fail=True)
        except Rollback:
            pass
        else:
            raise WorkloadError("the failing transaction did not raise")
    orders = int(await probe.conn.fetchval(f"SELECT count(*) FROM {peer.schema}.orders"))
    jobs = await peer.job_count(probe.conn)
    if orders != n or jobs != n:
        res.transaction_rate = None
        raise WorkloadError(
            f"after {n} committed transactions and one rolled back: {orders} orders and "
            f"{jobs} jobs in {peer.schema}, not {n} of each"
        )


WORKLOADS = [
    ("W1 enqueue", enqueue_workload),
    ("W2 drain", drain_workload),
    ("W3 latency", latency_workload),
    ("W4 sleep", sleep_workload),
    ("W5 transaction", transaction_workload),
]


async def run_library(res: Result, probe: ProbeReader, cfg: Config) -> None:
    """Every workload for one library, each on an empty installation, filling in ``res``
    as they finish; its schema is dropped at the end."""
    name = res.library
    try:
        peer = pg_peers.load(name)
    except ImportError as exc:
        res.skipped = f"cannot import: {exc}"
        return
    res.version, res.client = peer.version, peer.client
    res.has_bulk, res.has_transaction = peer.has_bulk, peer.has_transaction
    res.settings = list(peer.settings)
    reason = peer.skip_reason()
    if reason is not None:
        res.skipped = reason
        return
    try:
        for label, workload in WORKLOADS:
            if label.split()[0] not in cfg.workloads:
                continue
            print(f"  {name}: {label} ...", file=sys.stderr, flush=True)
            try:
                await reset(peer, probe)
                await workload(peer, probe, cfg, res)
            except Exception as exc:  # one library's failure must not end the comparison
                res.errors[label] = f"{type(exc).__name__}: {exc}"
                print(f"  {name}: {label} failed: {exc}", file=sys.stderr, flush=True)
    finally:
        with anyio.CancelScope(shield=True):
            await peer.drop(probe.conn)
            await probe.flush()


def _this_python(python: str) -> bool:
    # Not resolved: every virtualenv's python links to the same interpreter.
    return os.path.abspath(python) == os.path.abspath(sys.executable)


async def run_one(res: Result, probe: ProbeReader, cfg: Config) -> None:
    """asyncq under ``cfg.asyncq_python`` when that is another interpreter, everything else
    in this process (the peers' virtualenv)."""
    if res.library == "asyncq" and not _this_python(cfg.asyncq_python):
        await run_in_child(res, cfg)
        return
    await run_library(res, probe, cfg)


def child_arguments(cfg: Config) -> list[str]:
    """The options that make a child run the same workloads as this process."""
    return [
        *("--dsn", cfg.dsn, "--concurrency", str(cfg.concurrency)),
        *("--enqueue-jobs", str(cfg.enqueue_jobs), "--jobs", str(cfg.jobs)),
        *("--rate", repr(cfg.rate), "--duration", repr(cfg.duration)),
        *("--sleep-jobs", str(cfg.sleep_jobs), "--tx-jobs", str(cfg.tx_jobs)),
        *("--batch", str(cfg.batch), "--callers", str(cfg.callers)),
        *("--stop-timeout", repr(cfg.stop_timeout)),
        *("--workloads", ",".join(cfg.workloads)),
    ]


async def run_in_child(res: Result, cfg: Config) -> None:
    """Run ``res.library``'s workloads with this script under ``cfg.asyncq_python`` and take
    its results. Its progress shows on stderr; cancelled, it gets SIGTERM, which stops its
    workers as it would stop ours."""
    python = cfg.asyncq_python
    out = cfg.log_dir / f"{res.library}-results.json"
    argv = [python, str(HERE / "postgres_compare.py"), "--libs", res.library]
    argv += [*child_arguments(cfg), "--asyncq-python", python, "--json", str(out)]
    argv += ["--keep-probe"]  # the probe's schema is this process's to drop
    # Its report goes nowhere: its results come back as JSON.
    devnull = subprocess.DEVNULL
    async with await anyio.open_process(argv, stdin=devnull, stdout=devnull, stderr=None) as proc:
        try:
            await proc.wait()
        except BaseException:
            with anyio.CancelScope(shield=True):
                proc.terminate()
                with anyio.move_on_after(cfg.stop_timeout + 10):
                    await proc.wait()
                if proc.returncode is None:
                    proc.kill()
            raise
    try:
        (found,) = json.loads(out.read_text())["results"]
    except (OSError, ValueError) as exc:
        res.skipped = f"its run under {python} failed (exit {proc.returncode}): {exc}"
        return
    for name, value in found.items():
        setattr(res, name, value)


async def run_all(
    cfg: Config, results: list[Result], meta: dict[str, Any], keep_probe: bool
) -> None:
    """Each library in turn, with the driver's one connection for the probe and resets."""
    try:
        conn = await asyncpg.connect(cfg.dsn)
    except (OSError, asyncpg.PostgresError) as exc:
        raise SystemExit(f"PostgreSQL is not answering at {cfg.dsn}: {exc}") from None
    probe = ProbeReader(conn)
    try:
        meta["postgres"] = await conn.fetchval("SHOW server_version")
        meta["synchronous_commit"] = await conn.fetchval("SHOW synchronous_commit")
        await probe.setup()
        for name in cfg.libs:
            print(f"{name}:", file=sys.stderr, flush=True)
            results.append(Result(library=name))
            await run_one(results[-1], probe, cfg)
    finally:
        with anyio.CancelScope(shield=True):
            if not keep_probe:
                await probe.drop()
            await conn.close()


async def run_guarded(
    cfg: Config, results: list[Result], meta: dict[str, Any], keep_probe: bool
) -> bool:
    """Run everything; the first SIGINT/SIGTERM/SIGHUP stops the workers gracefully, a
    second kills them. Returns whether the run was interrupted."""
    interrupted = False
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
        async with anyio.create_task_group() as tg:
            bench = anyio.CancelScope()

            async def guarded() -> None:
                with bench:
                    await run_all(cfg, results, meta, keep_probe)
                tg.cancel_scope.cancel()

            tg.start_soon(guarded)
            async for _ in signals:
                if interrupted:
                    print("killing the workers", file=sys.stderr, flush=True)
                    kill_all_workers()
                else:
                    interrupted = True
                    print("interrupted: stopping the workers", file=sys.stderr, flush=True)
                    bench.cancel()
    return interrupted


# -- report ------------------------------------------------------------------------------------
def table(results: list[Result], cfg: Config) -> str:
    header = [
        "library",
        "version",
        "W1 enqueue, 1 await/job (jobs/s)",
        f"W1c {cfg.callers} callers at once (jobs/s)",
        f"W1 bulk, batches of {cfg.batch:,} (jobs/s)",
        f"W2 drain {cfg.jobs:,} (jobs/s)",
        "W2 worker peak RSS (MiB)",
        "W3 p50 (ms)",
        "W3 p99 (ms)",
        f"W4 {cfg.sleep_jobs:,} x 10 ms (s; ideal {cfg.sleep_ideal:.2f})",
        "W5 enqueue in a transaction with an INSERT (jobs/s)",
    ]
    rows = []
    for r in results:
        if r.skipped:
            rows.append([r.library, r.version or "—", f"skipped: {r.skipped}"] + [""] * 8)
            continue
        rows.append(
            [
                r.library,
                f"{r.version} ({r.client})" if r.client else r.version,
                rate(r.enqueue_rate),
                rate(r.concurrent_rate),
                rate(r.bulk_rate) if r.has_bulk else "n/a",
                rate(r.drain_rate),
                number(r.peak_rss_mib, 1),
                number(r.latency_p50_ms, 2),
                number(r.latency_p99_ms, 2),
                number(r.sleep_seconds, 2),
                rate(r.transaction_rate) if r.has_transaction else "n/a",
            ]
        )
    lines = ["| " + " | ".join(header) + " |"]
    lines.append("| " + " | ".join(["---", "---"] + ["---:"] * (len(header) - 2)) + " |")
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


RATIOS: list[tuple[str, str, bool, str]] = [
    # (label, Result field, higher is better, unit)
    ("W1 one await per job", "enqueue_rate", True, "jobs/s"),
    ("W1c concurrent callers", "concurrent_rate", True, "jobs/s"),
    ("W1 bulk", "bulk_rate", True, "jobs/s"),
    ("W2 drain", "drain_rate", True, "jobs/s"),
    ("W2 worker peak RSS", "peak_rss_mib", False, "MiB"),
    ("W3 p50", "latency_p50_ms", False, "ms"),
    ("W3 p99", "latency_p99_ms", False, "ms"),
    ("W4", "sleep_seconds", False, "s"),
    ("W5 transactional enqueue", "transaction_rate", True, "jobs/s"),
]


def ratios(results: list[Result], subject: str = "asyncq") -> list[str]:
    return bench_workers.ratios(results, RATIOS, subject)


def report(results: list[Result], cfg: Config, server: str, interrupted: bool) -> str:
    """The table, settings and notes; ``server`` says what the run ran on."""
    out = (
        ["INTERRUPTED: the workloads after the interruption did not run", ""] if interrupted else []
    )
    out += [
        f"{server}; one worker process per library, concurrency {cfg.concurrency}; "
        f"W1 {cfg.enqueue_jobs:,} jobs; W3 {cfg.rate:g} jobs/s for {cfg.duration:g} s; "
        f"W5 {cfg.tx_jobs:,} transactions; handlers: count in memory (W2, W4) or note the "
        "latency in memory (W3)",
        "",
        table(results, cfg),
    ]
    compared = ratios(results)
    if compared:
        out += ["", "asyncq against the best other library (above 1x: asyncq ahead):", *compared]
    settings = [f"- {r.library}: {s}" for r in results for s in r.settings]
    if settings:
        out += [
            "",
            "Settings (changes from a library's defaults, or what bears on its numbers):",
            *settings,
        ]
    notes = []
    for r in results:
        notes += [f"- {r.library}: {note}" for note in r.notes]
        notes += [f"- {r.library}: {w} failed: {e}" for w, e in r.errors.items()]
        if r.latency_rate is not None and r.latency_rate < 0.95 * cfg.rate:
            notes.append(f"- {r.library}: W3 enqueued at only {r.latency_rate:.0f} jobs/s")
    if notes:
        out += ["", "Notes:", *notes]
    return "\n".join(out)


# -- command line ------------------------------------------------------------------------------
def parse_args() -> tuple[Config, str | None, bool]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    libraries = list(pg_peers.LIBRARIES)
    parser.add_argument(
        "--libs",
        default=",".join(libraries),
        help="comma-separated libraries to run (default: %(default)s)",
    )
    parser.add_argument(
        "--dsn",
        default=DSN,
        help="the PostgreSQL database every library uses (default: %(default)s)",
    )
    parser.add_argument("--jobs", "-n", type=int, help="W2 jobs to drain (default 20,000)")
    parser.add_argument(
        "--enqueue-jobs", type=int, help="W1 jobs per enqueue measurement (default 5,000)"
    )
    parser.add_argument("--sleep-jobs", type=int, help="W4 jobs of 10 ms (default 5,000)")
    parser.add_argument("--tx-jobs", type=int, help="W5 transactions (default 5,000)")
    parser.add_argument(
        "--concurrency", "-c", type=int, default=100, help="worker slots (default %(default)s)"
    )
    parser.add_argument(
        "--rate", type=float, default=200.0, help="W3 jobs per second (default %(default)g)"
    )
    parser.add_argument("--duration", type=float, help="W3 seconds (default 10)")
    parser.add_argument(
        "--callers",
        type=int,
        default=100,
        help="W1c: concurrent callers, each one await per job (default %(default)s)",
    )
    parser.add_argument(
        "--batch", type=int, default=1_000, help="jobs per bulk enqueue (default %(default)s)"
    )
    parser.add_argument(
        "--stop-timeout",
        type=float,
        default=10.0,
        help="seconds from SIGTERM to SIGKILL (default 10)",
    )
    parser.add_argument(
        "--pgqueuer-batch",
        type=int,
        default=50,
        help="pgqueuer's batch_size, jobs per dequeue (default %(default)s; pgqueuer's own "
        "default is 10; at most half the concurrency)",
    )
    parser.add_argument(
        "--pgqueuer-loop",
        choices=["asyncio", "uvloop"],
        default="asyncio",
        help="pgqueuer's worker: pgqueuer.run() under asyncio.run, stock asyncio like the "
        "others (default), or its CLI, pgq run, which runs on uvloop",
    )
    parser.add_argument(
        "--asyncq-python",
        metavar="PATH",
        help="the python of asyncq's own virtualenv (pip install -e '.[postgres]') "
        "(default: .venv-bench-pg-asyncq/bin/python where it exists, else this interpreter)",
    )
    parser.add_argument(
        "--workloads",
        default=",".join(label.split()[0] for label, _ in WORKLOADS),
        help="comma-separated workloads to run (default: %(default)s)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="small counts for a smoke run (about 20 s)"
    )
    parser.add_argument(
        "--json",
        nargs="?",
        const="-",
        metavar="PATH",
        help="also write the results as JSON, to PATH or (without one) to stdout",
    )
    parser.add_argument("--keep-probe", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    libs = [name.strip() for name in args.libs.split(",") if name.strip()]
    unknown = [name for name in libs if name not in libraries]
    if unknown or not libs:
        parser.error(f"--libs: unknown {unknown}; known: {', '.join(libraries)}")

    def pick(value: Any, full: Any, quick: Any) -> Any:
        return value if value is not None else (quick if args.quick else full)

    settings: dict[str, Any] = {
        "libs": libs,
        "dsn": args.dsn,
        "concurrency": args.concurrency,
        "enqueue_jobs": pick(args.enqueue_jobs, 5_000, 500),
        "jobs": pick(args.jobs, 20_000, 2_000),
        "rate": args.rate,
        "duration": pick(args.duration, 10.0, 2.0),
        "sleep_jobs": pick(args.sleep_jobs, 5_000, 1_000),
        "tx_jobs": pick(args.tx_jobs, 5_000, 500),
        "batch": args.batch,
        "callers": args.callers,
        "stop_timeout": args.stop_timeout,
        "pgqueuer_batch": args.pgqueuer_batch,
        "pgqueuer_loop": args.pgqueuer_loop,
        "workloads": [w.strip().upper() for w in args.workloads.split(",") if w.strip()],
    }
    counts = [
        settings[k]
        for k in (
            "concurrency", "enqueue_jobs", "jobs", "sleep_jobs", "tx_jobs", "batch", "callers",
            "pgqueuer_batch",
        )
    ]  # fmt: skip
    known_workloads = [label.split()[0] for label, _ in WORKLOADS]
    if not settings["workloads"] or set(settings["workloads"]) - set(known_workloads):
        parser.error(f"--workloads: known: {', '.join(known_workloads)}")
    if min(counts) < 1 or args.rate <= 0 or settings["duration"] <= 0:
        parser.error("counts, --rate and --duration must be > 0")
    if "pgqueuer" in libs and 2 * args.pgqueuer_batch > args.concurrency:
        parser.error("--pgqueuer-batch: pgqueuer needs max_concurrent_tasks >= 2 x batch_size")
    if args.asyncq_python is not None and not Path(args.asyncq_python).is_file():
        parser.error(
            f"--asyncq-python: no interpreter at {args.asyncq_python} (make one with: python3 "
            "-m venv .venv-bench-pg-asyncq && .venv-bench-pg-asyncq/bin/pip install -e "
            "'.[postgres]')"
        )
    cfg = Config(
        **settings,
        asyncq_python=os.path.abspath(
            args.asyncq_python or (str(ASYNCQ_PYTHON) if ASYNCQ_PYTHON.exists() else sys.executable)
        ),
        log_dir=Path(tempfile.mkdtemp(prefix="postgres-compare-")),
    )
    return cfg, args.json, args.keep_probe


def main() -> None:
    cfg, json_path, keep_probe = parse_args()
    # The peer modules read these at import, in this process as in the workers.
    os.environ.update(worker_environment(cfg))
    meta: dict[str, Any] = {
        "postgres": "?",
        "synchronous_commit": "?",
        "python": platform.python_version(),
        "system": f"{platform.system()} {platform.machine()}",
        "cpus": os.cpu_count(),
    }
    print(f"worker logs: {cfg.log_dir}", file=sys.stderr)
    results: list[Result] = []
    try:
        interrupted = anyio.run(run_guarded, cfg, results, meta, keep_probe)
    finally:
        kill_all_workers()
    server = (
        f"Python {meta['python']}, {meta['system']}, {meta['cpus']} CPUs, PostgreSQL "
        f"{meta['postgres']} (synchronous_commit {meta['synchronous_commit']}) at {cfg.dsn}"
    )
    print(report(results, cfg, server, interrupted))
    if json_path is not None:
        config = {k: v for k, v in asdict(cfg).items() if k != "log_dir"}
        document = {
            "meta": meta,
            "config": config,
            "interrupted": interrupted,
            "results": [asdict(r) for r in results],
        }
        text = json.dumps(document, indent=2)
        if json_path == "-":
            print(text)
        else:
            Path(json_path).write_text(text + "\n")
    if interrupted:
        sys.exit(130)


if __name__ == "__main__":
    main()
