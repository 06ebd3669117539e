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
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import amqp_peers
import anyio
import redis_compare as rc
from amqp_peers.common import VHOST

AMQP_HOST = "127.0.0.1"
AMQP_PORT = 5672
AMQP_USER = "guest"
AMQP_PASSWORD = "guest"


@dataclass(frozen=True, slots=True)
class Config(rc.WorkloadConfig):
    """``redis_compare``'s workload settings, plus the RabbitMQ ones."""

    confirms: bool
    taskiq_queue_type: str

    @property
    def amqp_url(self) -> str:
        return f"amqp://{AMQP_USER}:{AMQP_PASSWORD}@{AMQP_HOST}:{AMQP_PORT}/{VHOST}"


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


# -- the run -----------------------------------------------------------------------------------
async def run_all(cfg: Config, results: list[rc.Result], meta: dict[str, Any]) -> None:
    """``redis_compare``'s run, each workload on an empty virtual host."""
    if shutil.which("rabbitmqctl") is None:
        raise SystemExit("rabbitmqctl is not on PATH: it creates and resets the virtual host")
    try:
        stream = await anyio.connect_tcp(AMQP_HOST, AMQP_PORT)
    except OSError as exc:
        raise SystemExit(f"RabbitMQ is not answering at {AMQP_HOST}:{AMQP_PORT}: {exc}") from None
    await stream.aclose()
    meta["rabbitmq"] = await rabbitmqctl("version", check=False) or "?"
    run_one = partial(rc.run_library, load=amqp_peers.load, reset=reset_vhost)
    await rc.run_all(cfg, results, meta, run_one)


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
    args = parser.parse_args()
    cfg = Config(
        **rc.common_settings(parser, args, amqp_peers.LIBRARIES),
        confirms=args.confirms,
        taskiq_queue_type=args.taskiq_queue_type,
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
    meta: dict[str, Any] = {"rabbitmq": "?", "redis": "?"}

    def broker() -> str:
        return (
            f"Python {meta['python']}, {meta['system']}, {meta['cpus']} CPUs, RabbitMQ "
            f"{meta['rabbitmq']} at {AMQP_HOST}:{AMQP_PORT}/{VHOST} (probe: Redis "
            f"{meta['redis']}, db {cfg.db})"
        )

    rc.run_and_report(cfg, meta, run_all, broker, json_path)


if __name__ == "__main__":
    main()
