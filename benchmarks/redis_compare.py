"""Job libraries side by side on one local Redis: asyncq, arq, saq, streaq, taskiq-redis.

    .venv-bench/bin/python benchmarks/redis_compare.py [--quick] [--libs arq,saq] [--json]

asyncq runs on the redis-py a plain ``pip install 'asyncq[redis]'`` gets, not on the peers'
pin (arq needs redis-py < 6): its workloads run in a child process of this script under
``--asyncq-python``, the interpreter of a virtualenv of its own (``.venv-bench-asyncq`` by
default), and its results join the peers' in one report.

Each library gets the same jobs, one worker process at ``--concurrency``, and a database of
its own (``--db``, 14 by default) flushed before each workload, so no run sees another's
keys. The workloads, in this order:

W1  enqueue: ``--enqueue-jobs`` jobs, (a) one await per job, (c) ``--callers`` concurrent
    callers (100), each with one await per job, as a web server's requests enqueue, (b) the
    library's bulk (pipelined) enqueue in batches of ``--batch``, where it has one;
W2  drain: ``--jobs`` no-op jobs enqueued first, then one worker process is started (the
    library's own CLI, or its documented programmatic worker); timed from the moment the
    worker's startup hook runs until the last job has counted itself done; plus the worker
    process's peak RSS (VmHWM) at the end;
W3  enqueue-to-start latency: with a worker running, ``--rate`` jobs/s for ``--duration``
    seconds, each carrying its enqueue time (``time.time()``); each job records when it
    started; p50 and p99;
W4  ``--sleep-jobs`` jobs of ``await asyncio.sleep(0.01)``, timed like W2, against the ideal
    jobs x 10 ms / concurrency.

Every handler does the same, minimal work (see ``peers/common.py``): it counts itself in
the worker's memory (W2, W4; the job that reaches the target stores the count and the time
in Redis), or RPUSHes its latency (W3). After each workload the worker gets SIGTERM, and
SIGKILL if it has not exited after ``--stop-timeout`` seconds; Ctrl-C (or SIGTERM) stops the
run the same way, a second one kills the workers at once.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import anyio
import bench_workers
import peers
import redis.asyncio as aioredis
from bench_workers import (
    WorkloadError,
    batches,
    kill_all_workers,
    number,
    peak_rss_mib,
    percentile,
    rate,
)
from peers.common import COUNTER, DONE, LATENCIES, READY, SLEEP_SECONDS, Kind, Peer
from redis.exceptions import RedisError

T = TypeVar("T")

HERE = Path(__file__).resolve().parent
ASYNCQ_PYTHON = HERE.parent / ".venv-bench-asyncq" / "bin" / "python"
"""Where asyncq's own virtualenv is looked for when ``--asyncq-python`` names none."""
REDIS_HOST = "127.0.0.1"
REDIS_PORT = 6379
WARMUP_JOBS = 50
"""W3: jobs run (and not measured) before the latency jobs, so connections are open."""
FILL_CONCURRENCY = 100
"""Untimed pre-enqueue without a bulk API: this many single enqueues in flight at once."""


@dataclass(frozen=True, slots=True)
class WorkloadConfig:
    """What the workloads read: the same for every broker's comparison."""

    libs: list[str]
    db: int
    concurrency: int
    enqueue_jobs: int
    jobs: int
    rate: float
    duration: float
    sleep_jobs: int
    batch: int
    callers: int
    stop_timeout: float
    log_dir: Path

    @property
    def redis_url(self) -> str:
        """The probe's Redis database (and, here, the libraries' broker)."""
        return f"redis://{REDIS_HOST}:{REDIS_PORT}/{self.db}"

    @property
    def sleep_ideal(self) -> float:
        return self.sleep_jobs * SLEEP_SECONDS / self.concurrency


@dataclass(frozen=True, slots=True)
class Config(WorkloadConfig):
    arq_poll_delay: float | None
    taskiq_results: bool
    asyncq_python: str
    """The interpreter asyncq's workloads run under (this one's own: in this process)."""


@dataclass(slots=True)
class Result:
    """One library's numbers; None where a workload was skipped or failed."""

    library: str
    version: str = ""
    client: str = ""
    """The Redis client the library ran on ("redis-py 8.1.0"), where the driver knows it."""
    skipped: str | None = None
    has_bulk: bool = False
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
    worker_startup_seconds: dict[str, float] = field(default_factory=dict)
    settings: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


# -- worker processes --------------------------------------------------------------------------
class WorkerProcess(bench_workers.WorkerProcess):
    """One library's worker process for one workload."""

    def __init__(self, peer: Peer, cfg: Config, *, target: int, label: str) -> None:
        env = {
            "BENCH_REDIS_URL": cfg.redis_url,
            "BENCH_CONCURRENCY": str(cfg.concurrency),
            "BENCH_TARGET": str(target),
        }
        super().__init__(
            peer.worker_command(cfg.concurrency), env, cwd=HERE,
            log_path=cfg.log_dir / f"{peer.name}-{label}.log", stop_timeout=cfg.stop_timeout,
        )  # fmt: skip

    async def ready(self, redis: aioredis.Redis, timeout: float = 60.0) -> tuple[float, int]:
        """Wait for the worker's startup hook: returns (epoch time it ran, worker pid)."""

        async def look() -> tuple[float, int] | None:
            found = await redis.hgetall(READY)
            return (float(found[b"time"]), int(found[b"pid"])) if found else None

        return await self.wait_ready(look, timeout)


# -- workloads ---------------------------------------------------------------------------------
async def flush(redis: aioredis.Redis) -> None:
    await redis.flushdb()


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


async def enqueue_workload(peer: Peer, redis: aioredis.Redis, cfg: Config, res: Result) -> None:
    """W1: one await per job; then the bulk enqueue, if the library has one."""
    n = cfg.enqueue_jobs
    await flush(redis)
    async with peer.producer():
        start = time.perf_counter()
        for _ in range(n):
            await peer.enqueue("noop")
        res.enqueue_rate = n / (time.perf_counter() - start)
    await flush(redis)
    async with peer.producer():
        res.concurrent_rate = await concurrent_enqueues(peer, n, cfg.callers)
    if not peer.has_bulk:
        return
    await flush(redis)
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
    peer: Peer, redis: aioredis.Redis, cfg: Config, res: Result, kind: Kind, n: int, label: str
) -> tuple[float, float | None]:
    """Enqueue ``n`` jobs, then start a worker; seconds from its start until the last job
    counted itself done, and the worker's peak RSS in MiB."""
    await flush(redis)
    async with peer.producer():
        await fill(peer, kind, n, cfg.batch)
    async with WorkerProcess(peer, cfg, target=n, label=label) as worker:
        started, pid = await worker.ready(redis)
        res.worker_startup_seconds[label] = round(started - worker.spawned_at, 3)

        async def done() -> float | None:
            value = await redis.get(DONE)
            return None if value is None else float(value)

        finished = await wait_for(f"{label} of {n} jobs", done, worker, 60 + n / 100, 0.02)
        rss = peak_rss_mib(pid)
        count = int(await redis.get(COUNTER) or 0)
    if count != n:
        res.notes.append(f"{label}: {count} job runs counted for {n} jobs")
    if worker.killed:
        res.notes.append(f"{label}: worker ignored SIGTERM for {cfg.stop_timeout:.0f} s; killed")
    return finished - started, rss


async def drain_workload(peer: Peer, redis: aioredis.Redis, cfg: Config, res: Result) -> None:
    """W2: drain pre-enqueued no-op jobs with one worker process."""
    seconds, rss = await timed_run(peer, redis, cfg, res, "noop", cfg.jobs, "drain")
    res.drain_seconds = seconds
    res.drain_rate = cfg.jobs / seconds
    res.peak_rss_mib = rss


async def sleep_workload(peer: Peer, redis: aioredis.Redis, cfg: Config, res: Result) -> None:
    """W4: jobs that each sleep 10 ms, run at ``concurrency``."""
    seconds, _ = await timed_run(peer, redis, cfg, res, "sleep", cfg.sleep_jobs, "sleep")
    res.sleep_seconds = seconds


async def latency_workload(peer: Peer, redis: aioredis.Redis, cfg: Config, res: Result) -> None:
    """W3: enqueue at a fixed rate with a worker running; time from enqueue to start."""
    total = max(1, round(cfg.rate * cfg.duration))
    await flush(redis)
    async with (
        peer.producer(),
        WorkerProcess(peer, cfg, target=WARMUP_JOBS, label="latency") as worker,
    ):
        started, _ = await worker.ready(redis)
        res.worker_startup_seconds["latency"] = round(started - worker.spawned_at, 3)
        for _ in range(WARMUP_JOBS):
            await peer.enqueue("noop")

        async def warm() -> bool | None:
            return True if int(await redis.get(COUNTER) or 0) >= WARMUP_JOBS else None

        await wait_for("latency warm-up", warm, worker, 30)

        # Paced against the schedule, not the previous send, so the rate does not drift.
        begin = time.perf_counter()
        for i in range(total):
            delay = begin + i / cfg.rate - time.perf_counter()
            if delay > 0:
                await anyio.sleep(delay)
            await peer.enqueue_latency(time.time())
        res.latency_rate = total / (time.perf_counter() - begin)

        async def recorded() -> bool | None:
            return True if await redis.llen(LATENCIES) >= total else None

        await wait_for("latency jobs", recorded, worker, 30 + cfg.duration)
        values = sorted(float(v) for v in await redis.lrange(LATENCIES, 0, -1))
    if worker.killed:
        res.notes.append(f"latency: worker ignored SIGTERM for {cfg.stop_timeout:.0f} s; killed")
    res.latency_jobs = len(values)
    res.latency_p50_ms = percentile(values, 0.50) * 1000
    res.latency_p99_ms = percentile(values, 0.99) * 1000


WORKLOADS = [
    ("W1 enqueue", enqueue_workload),
    ("W2 drain", drain_workload),
    ("W3 latency", latency_workload),
    ("W4 sleep", sleep_workload),
]


async def run_library(
    res: Result,
    redis: aioredis.Redis,
    cfg: Any,
    load: Callable[[str], Peer] = peers.load,
    reset: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Every workload for one library, filling in ``res`` as they finish; ``reset`` runs
    before each workload and after the last (a broker's own clean slate)."""
    name = res.library
    try:
        peer = load(name)
    except ImportError as exc:
        res.skipped = f"cannot import: {exc}"
        return
    res.version, res.has_bulk, res.settings = peer.version, peer.has_bulk, list(peer.settings)
    reason = peer.skip_reason()
    if reason is not None:
        res.skipped = reason
        return
    for label, workload in WORKLOADS:
        print(f"  {name}: {label} ...", file=sys.stderr, flush=True)
        try:
            if reset is not None:
                await reset()
            await workload(peer, redis, cfg, res)
        except Exception as exc:  # one library's failure must not end the comparison
            res.errors[label] = f"{type(exc).__name__}: {exc}"
            print(f"  {name}: {label} failed: {exc}", file=sys.stderr, flush=True)
    if reset is not None:
        await reset()
    await flush(redis)


RunOne = Callable[[Result, aioredis.Redis, Any], Awaitable[None]]


def _this_python(python: str) -> bool:
    # Not resolved: every virtualenv's python links to the same interpreter.
    return os.path.abspath(python) == os.path.abspath(sys.executable)


async def run_redis_library(res: Result, redis: aioredis.Redis, cfg: Config) -> None:
    """One library of this comparison: asyncq under ``cfg.asyncq_python`` when that is
    another interpreter, everything else in this process (the peers' virtualenv)."""
    if res.library == "asyncq" and not _this_python(cfg.asyncq_python):
        await run_in_child(res, cfg)
        return
    import redis as redis_py

    res.client = f"redis-py {redis_py.__version__}"
    await run_library(res, redis, cfg)
    if res.library == "asyncq" and not res.skipped and importlib.util.find_spec("arq"):
        res.notes.append(
            f"ran in the peers' virtualenv, on their pinned {res.client}: give "
            "--asyncq-python the python of a virtualenv with a plain pip install -e "
            "'.[redis]' to measure the redis-py a user gets"
        )


def child_arguments(cfg: Config) -> list[str]:
    """The options that make a child run the same workloads as this process."""
    return [
        *("--db", str(cfg.db), "--concurrency", str(cfg.concurrency)),
        *("--enqueue-jobs", str(cfg.enqueue_jobs), "--jobs", str(cfg.jobs)),
        *("--rate", repr(cfg.rate), "--duration", repr(cfg.duration)),
        *("--sleep-jobs", str(cfg.sleep_jobs), "--batch", str(cfg.batch)),
        *("--callers", str(cfg.callers)),
        *("--stop-timeout", repr(cfg.stop_timeout)),
    ]


async def run_in_child(res: Result, cfg: Config) -> None:
    """Run ``res.library``'s workloads with this script under ``cfg.asyncq_python`` and take
    its results. Its progress shows on stderr; cancelled, it gets SIGTERM, which stops its
    workers as it would stop ours."""
    python = cfg.asyncq_python
    out = cfg.log_dir / f"{res.library}-results.json"
    argv = [python, str(HERE / "redis_compare.py"), "--libs", res.library]
    argv += [*child_arguments(cfg), "--asyncq-python", python, "--json", str(out)]
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
    cfg: Any, results: list[Result], meta: dict[str, Any], run_one: RunOne = run_library
) -> None:
    """Each library in turn, with the probe's Redis connection."""
    redis = aioredis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=cfg.db)
    try:
        try:
            info = await redis.info("server")
        except (OSError, RedisError) as exc:
            raise SystemExit(
                f"Redis is not answering at {REDIS_HOST}:{REDIS_PORT}: {exc}"
            ) from None
        meta["redis"] = info.get("redis_version", "?")
        for name in cfg.libs:
            print(f"{name}:", file=sys.stderr, flush=True)
            results.append(Result(library=name))
            await run_one(results[-1], redis, cfg)
    finally:
        with anyio.CancelScope(shield=True):
            await redis.aclose()


RunAll = Callable[[Any, list[Result], dict[str, Any]], Awaitable[None]]


async def run_guarded(
    cfg: Any, results: list[Result], meta: dict[str, Any], run: RunAll = run_all
) -> bool:
    """Run everything; the first SIGINT/SIGTERM/SIGHUP stops the workers gracefully, a
    second kills them. Returns whether the run was interrupted."""
    interrupted = False
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
        async with anyio.create_task_group() as tg:
            bench = anyio.CancelScope()

            async def guarded() -> None:
                with bench:
                    await run(cfg, results, meta)
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
    ]
    rows = []
    for r in results:
        if r.skipped:
            rows.append([r.library, r.version or "—", f"skipped: {r.skipped}"] + [""] * 7)
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
]


def ratios(results: list[Result], subject: str = "asyncq") -> list[str]:
    return bench_workers.ratios(results, RATIOS, subject)


def report(results: list[Result], cfg: Any, broker: str, interrupted: bool) -> str:
    """The table, settings and notes; ``broker`` says what the run ran on."""
    out = (
        ["INTERRUPTED: the workloads after the interruption did not run", ""] if interrupted else []
    )
    out += [
        f"{broker}; one worker process per library, concurrency {cfg.concurrency}; "
        f"W1 {cfg.enqueue_jobs:,} jobs; W3 {cfg.rate:g} jobs/s for {cfg.duration:g} s; "
        "handlers: count in memory (W2, W4) or one RPUSH (W3)",
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
def add_common_arguments(
    parser: argparse.ArgumentParser, libraries: Sequence[str], db: int
) -> None:
    """The options every comparison takes: which libraries, how many jobs, where the probe
    writes, how long a worker gets to stop, and the output."""
    parser.add_argument(
        "--libs",
        default=",".join(libraries),
        help="comma-separated libraries to run (default: %(default)s)",
    )
    parser.add_argument("--jobs", "-n", type=int, help="W2 jobs to drain (default 20,000)")
    parser.add_argument(
        "--enqueue-jobs", type=int, help="W1 jobs per enqueue measurement (default 5,000)"
    )
    parser.add_argument("--sleep-jobs", type=int, help="W4 jobs of 10 ms (default 5,000)")
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
        "--db",
        type=int,
        default=db,
        help="Redis database 1-15 for the probe, flushed before each workload "
        "(default %(default)s)",
    )
    parser.add_argument(
        "--stop-timeout",
        type=float,
        default=10.0,
        help="seconds from SIGTERM to SIGKILL (default 10)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="small counts for a smoke run (about a minute)"
    )
    parser.add_argument(
        "--json",
        nargs="?",
        const="-",
        metavar="PATH",
        help="also write the results as JSON, to PATH or (without one) to stdout",
    )


def common_settings(
    parser: argparse.ArgumentParser, args: argparse.Namespace, libraries: Sequence[str]
) -> dict[str, Any]:
    """The common options, checked, with ``--quick``'s smaller counts where none was given."""
    libs = [name.strip() for name in args.libs.split(",") if name.strip()]
    unknown = [name for name in libs if name not in libraries]
    if unknown or not libs:
        parser.error(f"--libs: unknown {unknown}; known: {', '.join(libraries)}")

    def pick(value: Any, full: Any, quick: Any) -> Any:
        return value if value is not None else (quick if args.quick else full)

    settings = {
        "libs": libs,
        "db": args.db,
        "concurrency": args.concurrency,
        "enqueue_jobs": pick(args.enqueue_jobs, 5_000, 500),
        "jobs": pick(args.jobs, 20_000, 2_000),
        "rate": args.rate,
        "duration": pick(args.duration, 10.0, 2.0),
        "sleep_jobs": pick(args.sleep_jobs, 5_000, 1_000),
        "batch": args.batch,
        "callers": args.callers,
        "stop_timeout": args.stop_timeout,
    }
    counts = [
        settings[k]
        for k in ("concurrency", "enqueue_jobs", "jobs", "sleep_jobs", "batch", "callers")
    ]
    if min(counts) < 1 or args.rate <= 0 or settings["duration"] <= 0 or not 0 < args.db < 16:
        parser.error("counts, --rate and --duration must be > 0, --db between 1 and 15")
    return settings


def parse_args() -> tuple[Config, str | None]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_arguments(parser, peers.LIBRARIES, db=14)
    parser.add_argument(
        "--arq-poll-delay",
        type=float,
        metavar="SECONDS",
        help="arq's poll_delay (default: arq's own, 0.5 s)",
    )
    parser.add_argument(
        "--taskiq-results",
        action="store_true",
        help="give taskiq a result backend (RedisAsyncResultBackend); by default it has none",
    )
    parser.add_argument(
        "--asyncq-python",
        metavar="PATH",
        help="the python of asyncq's own virtualenv (pip install -e '.[redis]'), so it runs "
        "on the redis-py users get (default: .venv-bench-asyncq/bin/python where it exists, "
        "else this interpreter)",
    )
    args = parser.parse_args()
    settings = common_settings(parser, args, peers.LIBRARIES)
    if args.arq_poll_delay is not None and args.arq_poll_delay <= 0:
        parser.error("--arq-poll-delay must be > 0")
    if args.asyncq_python is not None and not Path(args.asyncq_python).is_file():
        parser.error(
            f"--asyncq-python: no interpreter at {args.asyncq_python} (make one with: python3 "
            "-m venv .venv-bench-asyncq && .venv-bench-asyncq/bin/pip install -e '.[redis]')"
        )
    cfg = Config(
        **settings,
        arq_poll_delay=args.arq_poll_delay,
        taskiq_results=args.taskiq_results,
        asyncq_python=os.path.abspath(
            args.asyncq_python or (str(ASYNCQ_PYTHON) if ASYNCQ_PYTHON.exists() else sys.executable)
        ),
        log_dir=Path(tempfile.mkdtemp(prefix="redis-compare-")),
    )
    return cfg, args.json


def run_and_report(
    cfg: Any, meta: dict[str, Any], run: RunAll, broker: Callable[[], str], json_path: str | None
) -> None:
    """Run every library, print the report (and JSON), and exit 130 if interrupted;
    ``broker`` describes the run once ``run`` has filled in ``meta``."""
    meta.update(
        python=platform.python_version(),
        system=f"{platform.system()} {platform.machine()}",
        cpus=os.cpu_count(),
    )
    print(f"worker logs: {cfg.log_dir}", file=sys.stderr)
    results: list[Result] = []
    try:
        interrupted = anyio.run(run_guarded, cfg, results, meta, run)
    finally:
        kill_all_workers()
    print(report(results, cfg, broker(), interrupted))
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


def main() -> None:
    cfg, json_path = parse_args()
    # The peer modules read these at import, in this process as in the workers.
    os.environ["BENCH_REDIS_URL"] = cfg.redis_url
    os.environ["BENCH_CONCURRENCY"] = str(cfg.concurrency)
    os.environ.pop("BENCH_ARQ_POLL_DELAY", None)
    if cfg.arq_poll_delay is not None:
        os.environ["BENCH_ARQ_POLL_DELAY"] = repr(cfg.arq_poll_delay)
    os.environ["BENCH_TASKIQ_RESULTS"] = "1" if cfg.taskiq_results else "0"
    meta: dict[str, Any] = {"redis": "?"}

    def broker() -> str:
        return (
            f"Python {meta['python']}, {meta['system']}, {meta['cpus']} CPUs, Redis "
            f"{meta['redis']} at {REDIS_HOST}:{REDIS_PORT}/{cfg.db}"
        )

    async def run(cfg: Any, results: list[Result], meta: dict[str, Any]) -> None:
        await run_all(cfg, results, meta, run_redis_library)

    run_and_report(cfg, meta, run, broker, json_path)


if __name__ == "__main__":
    main()
