"""Job libraries side by side on one local RabbitMQ: asyncq, taskiq-aio-pika, dramatiq, celery.

    .venv-amqp-bench/bin/python benchmarks/amqp_compare.py [--quick] [--libs dramatiq] [--json]

The same workloads, probe and worker handling as ``redis_compare.py`` (whose driver this
reuses), on RabbitMQ at 127.0.0.1:5672 (guest/guest), in a virtual host of its own,
``asyncq-bench``, which is deleted and created again (``rabbitmqctl``) before each workload,
so no run sees another's queues and nothing outside it is touched; the default virtual host
is never used. The handlers' probe still writes to Redis (127.0.0.1:6379, ``--db``, 11 by
default), flushed before each workload.

W1  enqueue: ``--enqueue-jobs`` jobs, (a) one await (or blocking call) per job, (b) the
    library's bulk enqueue in batches of ``--batch``, where it has one;
W2  drain: ``--jobs`` no-op jobs enqueued first, then one worker process started; timed
    from the worker's startup hook until the last job has counted itself done; plus the
    peak RSS (VmHWM) of the process that runs the handlers;
W3  enqueue-to-start latency at ``--rate`` jobs/s for ``--duration`` seconds; p50 and p99;
W4  ``--sleep-jobs`` jobs of a 10 ms sleep (``asyncio.sleep`` in asyncq and taskiq,
    ``time.sleep`` in the thread-based dramatiq and celery), timed like W2.

asyncq runs on its ``amqp`` backend, and is reported as skipped until one is installed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import amqp_peers
import anyio
import redis.asyncio as aioredis
import redis_compare as rc
from amqp_peers.common import VHOST
from peers.common import SLEEP_SECONDS, Peer
from redis.exceptions import RedisError

AMQP_HOST = "127.0.0.1"
AMQP_PORT = 5672
AMQP_USER = "guest"
AMQP_PASSWORD = "guest"


@dataclass(frozen=True, slots=True)
class Config:
    """What ``redis_compare``'s workloads read, plus the RabbitMQ settings."""

    libs: list[str]
    db: int
    concurrency: int
    enqueue_jobs: int
    jobs: int
    rate: float
    duration: float
    sleep_jobs: int
    batch: int
    stop_timeout: float
    confirms: bool
    taskiq_queue_type: str
    log_dir: Path

    @property
    def redis_url(self) -> str:
        return f"redis://{rc.REDIS_HOST}:{rc.REDIS_PORT}/{self.db}"

    @property
    def amqp_url(self) -> str:
        return f"amqp://{AMQP_USER}:{AMQP_PASSWORD}@{AMQP_HOST}:{AMQP_PORT}/{VHOST}"

    @property
    def sleep_ideal(self) -> float:
        return self.sleep_jobs * SLEEP_SECONDS / self.concurrency


# -- the virtual host --------------------------------------------------------------------------
async def rabbitmqctl(*args: str, check: bool = True) -> str:
    result = await anyio.run_process(
        ["rabbitmqctl", "-q", *args], check=False, stdin=subprocess.DEVNULL
    )
    if check and result.returncode != 0:
        raise rc.WorkloadError(
            f"rabbitmqctl {' '.join(args)} failed ({result.returncode}): "
            f"{result.stderr.decode(errors='replace').strip()}"
        )
    return result.stdout.decode(errors="replace").strip()


async def reset_vhost() -> None:
    """Delete the benchmark's virtual host with every queue in it, and create it again."""
    await rabbitmqctl("delete_vhost", VHOST, check=False)  # fails only if it is missing
    await rabbitmqctl("add_vhost", VHOST)
    await rabbitmqctl("set_permissions", "-p", VHOST, AMQP_USER, ".*", ".*", ".*")


# -- workloads ---------------------------------------------------------------------------------
WORKLOADS = [
    ("W1 enqueue", rc.enqueue_workload),
    ("W2 drain", rc.drain_workload),
    ("W3 latency", rc.latency_workload),
    ("W4 sleep", rc.sleep_workload),
]


async def run_library(res: rc.Result, redis: aioredis.Redis, cfg: Config) -> None:
    """Every workload for one library, each on an empty virtual host and Redis database."""
    name = res.library
    try:
        peer: Peer = amqp_peers.load(name)
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
            await reset_vhost()
            await workload(peer, redis, cfg, res)
        except Exception as exc:  # one library's failure must not end the comparison
            res.errors[label] = f"{type(exc).__name__}: {exc}"
            print(f"  {name}: {label} failed: {exc}", file=sys.stderr, flush=True)
    await reset_vhost()
    await rc.flush(redis)


async def run_all(cfg: Config, results: list[rc.Result], meta: dict[str, Any]) -> None:
    if shutil.which("rabbitmqctl") is None:
        raise SystemExit("rabbitmqctl is not on PATH: it creates and resets the virtual host")
    try:
        stream = await anyio.connect_tcp(AMQP_HOST, AMQP_PORT)
    except OSError as exc:
        raise SystemExit(f"RabbitMQ is not answering at {AMQP_HOST}:{AMQP_PORT}: {exc}") from None
    await stream.aclose()
    meta["rabbitmq"] = await rabbitmqctl("version", check=False) or "?"
    redis = aioredis.Redis(host=rc.REDIS_HOST, port=rc.REDIS_PORT, db=cfg.db)
    try:
        try:
            info = await redis.info("server")
        except (OSError, RedisError) as exc:
            raise SystemExit(
                f"Redis is not answering at {rc.REDIS_HOST}:{rc.REDIS_PORT}: {exc}"
            ) from None
        meta["redis"] = info.get("redis_version", "?")
        for name in cfg.libs:
            print(f"{name}:", file=sys.stderr, flush=True)
            results.append(rc.Result(library=name))
            await run_library(results[-1], redis, cfg)
    finally:
        with anyio.CancelScope(shield=True):
            await redis.aclose()


async def run_guarded(cfg: Config, results: list[rc.Result], meta: dict[str, Any]) -> bool:
    """Run everything; the first SIGINT/SIGTERM/SIGHUP stops the workers gracefully, a
    second kills them. Returns whether the run was interrupted."""
    interrupted = False
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
        async with anyio.create_task_group() as tg:
            bench = anyio.CancelScope()

            async def run() -> None:
                with bench:
                    await run_all(cfg, results, meta)
                tg.cancel_scope.cancel()

            tg.start_soon(run)
            async for _ in signals:
                if interrupted:
                    print("killing the workers", file=sys.stderr, flush=True)
                    rc.kill_all_workers()
                else:
                    interrupted = True
                    print("interrupted: stopping the workers", file=sys.stderr, flush=True)
                    bench.cancel()
    return interrupted


# -- report ------------------------------------------------------------------------------------
def report(results: list[rc.Result], cfg: Config, meta: dict[str, Any], interrupted: bool) -> str:
    out = (
        ["INTERRUPTED: the workloads after the interruption did not run", ""] if interrupted else []
    )
    out += [
        f"Python {meta['python']}, {meta['system']}, {meta['cpus']} CPUs, RabbitMQ "
        f"{meta['rabbitmq']} at {AMQP_HOST}:{AMQP_PORT}/{VHOST} (probe: Redis {meta['redis']}, "
        f"db {cfg.db}); one worker process per library, concurrency {cfg.concurrency}; "
        f"W1 {cfg.enqueue_jobs:,} jobs; W3 {cfg.rate:g} jobs/s for {cfg.duration:g} s; "
        "handlers: count in memory (W2, W4) or one RPUSH (W3)",
        "",
        rc.table(results, cfg),
    ]
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
def parse_args() -> tuple[Config, str | None]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--libs",
        default=",".join(amqp_peers.LIBRARIES),
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
        "--batch", type=int, default=1_000, help="jobs per bulk enqueue (default %(default)s)"
    )
    parser.add_argument(
        "--db",
        type=int,
        default=11,
        help="Redis database 1-15 for the probe, flushed before each workload (default 11)",
    )
    parser.add_argument(
        "--stop-timeout",
        type=float,
        default=10.0,
        help="seconds from SIGTERM to SIGKILL (default 10)",
    )
    parser.add_argument(
        "--confirms",
        action="store_true",
        help="publisher confirms for dramatiq and celery too (taskiq-aio-pika always has them)",
    )
    parser.add_argument(
        "--taskiq-queue-type",
        choices=["classic", "quorum"],
        default="classic",
        help="taskiq's queue type (default %(default)s, as the others'; taskiq-aio-pika's "
        "own default is quorum)",
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
    args = parser.parse_args()
    libs = [name.strip() for name in args.libs.split(",") if name.strip()]
    unknown = [name for name in libs if name not in amqp_peers.LIBRARIES]
    if unknown or not libs:
        parser.error(f"--libs: unknown {unknown}; known: {', '.join(amqp_peers.LIBRARIES)}")

    def pick(value: Any, full: Any, quick: Any) -> Any:
        return value if value is not None else (quick if args.quick else full)

    cfg = Config(
        libs=libs,
        db=args.db,
        concurrency=args.concurrency,
        enqueue_jobs=pick(args.enqueue_jobs, 5_000, 500),
        jobs=pick(args.jobs, 20_000, 2_000),
        rate=args.rate,
        duration=pick(args.duration, 10.0, 2.0),
        sleep_jobs=pick(args.sleep_jobs, 5_000, 1_000),
        batch=args.batch,
        stop_timeout=args.stop_timeout,
        confirms=args.confirms,
        taskiq_queue_type=args.taskiq_queue_type,
        log_dir=Path(),
    )
    counts = [cfg.concurrency, cfg.enqueue_jobs, cfg.jobs, cfg.sleep_jobs, cfg.batch]
    if min(counts) < 1 or cfg.rate <= 0 or cfg.duration <= 0 or not 0 < cfg.db < 16:
        parser.error("counts, --rate and --duration must be > 0, --db between 1 and 15")
    cfg = replace(cfg, log_dir=Path(tempfile.mkdtemp(prefix="amqp-compare-")))
    return cfg, args.json


def main() -> None:
    cfg, json_path = parse_args()
    # The peer modules read these at import, in this process as in the workers.
    os.environ["BENCH_REDIS_URL"] = cfg.redis_url
    os.environ["BENCH_AMQP_URL"] = cfg.amqp_url
    os.environ["BENCH_CONCURRENCY"] = str(cfg.concurrency)
    os.environ["BENCH_AMQP_CONFIRMS"] = "1" if cfg.confirms else "0"
    os.environ["BENCH_TASKIQ_QUEUE_TYPE"] = cfg.taskiq_queue_type
    meta: dict[str, Any] = {
        "python": platform.python_version(),
        "system": f"{platform.system()} {platform.machine()}",
        "cpus": os.cpu_count(),
        "rabbitmq": "?",
        "redis": "?",
    }
    print(f"worker logs: {cfg.log_dir}", file=sys.stderr)
    results: list[rc.Result] = []
    try:
        interrupted = anyio.run(run_guarded, cfg, results, meta)
    finally:
        rc.kill_all_workers()
    print(report(results, cfg, meta, interrupted))
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
