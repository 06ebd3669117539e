"""Job libraries side by side on one local RabbitMQ: asyncq, taskiq-aio-pika, dramatiq, celery.

    .venv-amqp-bench/bin/python benchmarks/amqp_compare.py [--quick] [--libs dramatiq] [--json]

The same workloads, probe and worker handling as ``redis_compare.py`` (whose driver this
reuses), on RabbitMQ at 127.0.0.1:5672 (guest/guest), in a virtual host of its own,
``asyncq-bench``, which is deleted and created again (``rabbitmqctl``) before each workload,
so no run sees another's queues and nothing outside it is touched; the default virtual host
is never used. The handlers' probe still writes to Redis (127.0.0.1:6379, ``--db``, 11 by
default), flushed before each workload.

W1  enqueue: ``--enqueue-jobs`` jobs, (a) one await (or blocking call) per job, (c) W1c:
    ``--callers`` concurrent callers (100), each with one await per job, as a web server's
    requests enqueue: tasks on one event loop for asyncq and taskiq (each ``kiq()`` awaited
    by its caller), threads for the synchronous dramatiq and celery (``send()``,
    ``apply_async()``; see :func:`amqp_peers.common.threaded_sends`), (b) the library's bulk
    enqueue in batches of ``--batch``, where it has one;
W2  drain: ``--jobs`` no-op jobs enqueued first, then one worker process started; timed
    from the worker's startup hook until the last job has counted itself done; plus the
    peak RSS (VmHWM) of the process that runs the handlers;
W3  enqueue-to-start latency at ``--rate`` jobs/s for ``--duration`` seconds; p50 and p99;
W4  ``--sleep-jobs`` jobs of a 10 ms sleep (``asyncio.sleep`` in asyncq and taskiq,
    ``time.sleep`` in the thread-based dramatiq and celery), timed like W2.

asyncq runs on its ``amqp`` backend, its job records in Redis (``--records-db``, 12 by
default; ``--asyncq-records none`` runs it on RabbitMQ alone, the floor under the
records), its queues and keys under a prefix made fresh for each run,
``asyncq-bench-<hex>``; the keys under it are deleted before each workload and at the end,
like the virtual host.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import amqp_peers
import anyio
import redis.asyncio as aioredis
import redis_compare as rc
from amqp_peers.common import VHOST, BlockingSend, threaded_sends

AMQP_HOST = "127.0.0.1"
AMQP_PORT = 5672
AMQP_USER = "guest"
AMQP_PASSWORD = "guest"
ADD_VHOST_ATTEMPTS = 10


@dataclass(frozen=True, slots=True)
class Config(rc.WorkloadConfig):
    """``redis_compare``'s workload settings, plus the RabbitMQ ones."""

    confirms: bool
    taskiq_queue_type: str
    records_db: int
    asyncq_records: bool
    asyncq_prefix: str
    amqp_port: int
    rabbitmq_node: str | None

    @property
    def amqp_url(self) -> str:
        return f"amqp://{AMQP_USER}:{AMQP_PASSWORD}@{AMQP_HOST}:{self.amqp_port}/{VHOST}"

    @property
    def records_url(self) -> str:
        """Where asyncq's AMQP backend keeps its job records ("" for none)."""
        if not self.asyncq_records:
            return ""
        return f"redis://{rc.REDIS_HOST}:{rc.REDIS_PORT}/{self.records_db}"


# -- the virtual host --------------------------------------------------------------------------
async def rabbitmqctl(cfg: Config, *args: str, check: bool = True) -> str:
    node = ["-n", cfg.rabbitmq_node] if cfg.rabbitmq_node else []
    result = await anyio.run_process(
        ["rabbitmqctl", *node, "-q", *args], check=False, stdin=subprocess.DEVNULL
    )
    if check and result.returncode != 0:
        raise rc.WorkloadError(
            f"rabbitmqctl {' '.join(args)} failed ({result.returncode}): "
            f"{result.stderr.decode(errors='replace').strip()}"
        )
    return result.stdout.decode(errors="replace").strip()


async def reset_vhost(cfg: Config) -> None:
    """Delete the benchmark's virtual host with every queue in it, and create it again."""
    await rabbitmqctl(cfg, "delete_vhost", VHOST, check=False)  # fails only if it is missing
    # On a busy node, add_vhost now and then fails at once claiming that the 'rabbit' app is
    # not running; it succeeds when tried again a moment later.
    for attempt in range(ADD_VHOST_ATTEMPTS):
        try:
            await rabbitmqctl(cfg, "add_vhost", VHOST)
            break
        except rc.WorkloadError:
            if attempt == ADD_VHOST_ATTEMPTS - 1:
                raise
            await anyio.sleep(0.5)
    await rabbitmqctl(cfg, "set_permissions", "-p", VHOST, AMQP_USER, ".*", ".*", ".*")


async def delete_records(cfg: Config) -> int:
    """Delete asyncq's job records of this run: every key under its prefix, nothing else."""
    deleted = 0
    redis = aioredis.Redis(host=rc.REDIS_HOST, port=rc.REDIS_PORT, db=cfg.records_db)
    try:
        batch: list[bytes] = []
        async for key in redis.scan_iter(match=f"{cfg.asyncq_prefix}:*", count=1_000):
            batch.append(key)
            if len(batch) == 1_000:
                deleted += await redis.unlink(*batch)
                batch.clear()
        if batch:
            deleted += await redis.unlink(*batch)
    finally:
        await redis.aclose()
    return deleted


async def reset(cfg: Config) -> None:
    """The clean slate before each workload and after the last: an empty virtual host, and
    none of asyncq's records left."""
    await reset_vhost(cfg)
    await delete_records(cfg)


# -- the run -----------------------------------------------------------------------------------
async def run_library(res: rc.Result, redis: aioredis.Redis, cfg: Config) -> None:
    """``redis_compare``'s workloads for one library, each on an empty virtual host; for a
    library whose enqueue blocks, W1c again with caller threads, replacing the figure its
    callers got taking turns on the driver's event loop."""
    reset_all = partial(reset, cfg)
    await rc.run_library(res, redis, cfg, load=amqp_peers.load, reset=reset_all)
    if res.skipped is not None or "W1 enqueue" in res.errors:
        return
    peer = amqp_peers.load(res.library)
    if not isinstance(peer, BlockingSend):
        return
    print(f"  {res.library}: W1c with caller threads ...", file=sys.stderr, flush=True)
    try:
        await reset_all()
        async with peer.producer():
            res.concurrent_rate = await anyio.to_thread.run_sync(
                threaded_sends, peer, cfg.enqueue_jobs, cfg.callers
            )
    except Exception as exc:  # one library's failure must not end the comparison
        res.concurrent_rate = None
        res.errors["W1c threads"] = f"{type(exc).__name__}: {exc}"
        print(f"  {res.library}: W1c with caller threads failed: {exc}", file=sys.stderr)
    finally:
        await reset_all()
        await rc.flush(redis)


async def run_all(cfg: Config, results: list[rc.Result], meta: dict[str, Any]) -> None:
    """``redis_compare``'s run, each workload on an empty virtual host."""
    if shutil.which("rabbitmqctl") is None:
        raise SystemExit("rabbitmqctl is not on PATH: it creates and resets the virtual host")
    try:
        stream = await anyio.connect_tcp(AMQP_HOST, cfg.amqp_port)
    except OSError as exc:
        raise SystemExit(
            f"RabbitMQ is not answering at {AMQP_HOST}:{cfg.amqp_port}: {exc}"
        ) from None
    await stream.aclose()
    meta["rabbitmq"] = await rabbitmqctl(cfg, "version", check=False) or "?"
    try:
        await rc.run_all(cfg, results, meta, run_library)
    finally:
        # An interrupted or failed run leaves no records behind either (the virtual host is
        # deleted at the next run's first workload).
        with anyio.CancelScope(shield=True):
            await delete_records(cfg)


def parse_args() -> tuple[Config, str | None]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    rc.add_common_arguments(parser, amqp_peers.LIBRARIES, db=11)
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
        "--records-db",
        type=int,
        default=12,
        help="Redis database 1-15 for asyncq's job records; only the keys under this run's "
        "prefix are deleted, before each workload and at the end (default %(default)s)",
    )
    parser.add_argument(
        "--asyncq-records",
        choices=["redis", "none"],
        default="redis",
        help="where asyncq keeps its job records: Redis (the default) or none, RabbitMQ "
        "alone without what needs records (results, status, keys)",
    )
    parser.add_argument(
        "--amqp-port",
        type=int,
        default=AMQP_PORT,
        help="RabbitMQ's port on 127.0.0.1 (default %(default)s)",
    )
    parser.add_argument(
        "--rabbitmq-node",
        metavar="NAME",
        help="the node rabbitmqctl manages (rabbitmqctl -n), for a broker other than the "
        "default node, e.g. one of its own on another --amqp-port",
    )
    args = parser.parse_args()
    if not 0 < args.records_db < 16:
        parser.error("--records-db must be between 1 and 15")
    cfg = Config(
        **rc.common_settings(parser, args, amqp_peers.LIBRARIES),
        confirms=args.confirms,
        taskiq_queue_type=args.taskiq_queue_type,
        records_db=args.records_db,
        asyncq_records=args.asyncq_records == "redis",
        amqp_port=args.amqp_port,
        rabbitmq_node=args.rabbitmq_node,
        asyncq_prefix=f"asyncq-bench-{secrets.token_hex(4)}",
        log_dir=Path(tempfile.mkdtemp(prefix="amqp-compare-")),
    )
    return cfg, args.json


def main() -> None:
    cfg, json_path = parse_args()
    # The peer modules read these at import, in this process as in the workers.
    os.environ["BENCH_REDIS_URL"] = cfg.redis_url
    os.environ["BENCH_AMQP_URL"] = cfg.amqp_url
    os.environ["BENCH_CONCURRENCY"] = str(cfg.concurrency)
    os.environ["BENCH_AMQP_CONFIRMS"] = "1" if cfg.confirms else "0"
    os.environ["BENCH_TASKIQ_QUEUE_TYPE"] = cfg.taskiq_queue_type
    os.environ["BENCH_ASYNCQ_RECORDS"] = cfg.records_url
    os.environ["BENCH_ASYNCQ_PREFIX"] = cfg.asyncq_prefix
    meta: dict[str, Any] = {"rabbitmq": "?", "redis": "?"}

    def broker() -> str:
        return (
            f"Python {meta['python']}, {meta['system']}, {meta['cpus']} CPUs, RabbitMQ "
            f"{meta['rabbitmq']} at {AMQP_HOST}:{cfg.amqp_port}/{VHOST} (probe: Redis "
            f"{meta['redis']}, db {cfg.db}; asyncq's records: "
            f"{f'db {cfg.records_db}' if cfg.asyncq_records else 'none'})"
        )

    rc.run_and_report(cfg, meta, run_all, broker, json_path)


if __name__ == "__main__":
    main()
