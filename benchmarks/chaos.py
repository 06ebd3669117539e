"""A chaos soak: producers and workers in processes of their own, for a set time, while faults
are injected, with a ledger that proves no confirmed job was lost.

    python benchmarks/chaos.py --backend redis --duration 600
    python benchmarks/chaos.py --backend postgres --duration 60 --json
    python benchmarks/chaos.py --backend sqlite --duration 60 --seed 7
    python benchmarks/chaos.py --backend redis-cluster --duration 60
    python benchmarks/chaos.py --backend amqp-cluster --duration 60
    python benchmarks/chaos.py --broker-url redis://127.0.0.1:6379/14 --duration 60

The broker is a private one the soak starts on free loopback ports and may kill
(``soak/brokers.py``, ``soak/clusters.py``): redis-server with AOF ``appendfsync always``, a
PostgreSQL cluster of its own (initdb + pg_ctl), an SQLite file, a Redis Cluster of three
masters and three replicas (``scripts/redis_cluster.sh``, every node with AOF ``appendfsync
always``, the URL with ``wait_replicas=1``), or a three-node RabbitMQ cluster with quorum
queues (``scripts/rabbitmq_cluster.sh``, the job records in a private Redis of its own);
``--broker-url`` names one someone else started instead (never restarted). Workers and
producers reach a networked broker through TCP proxies of the soak's own
(``soak/proxy.py``), one per node, which the injector cuts and delays; a Redis Cluster's
nodes announce their proxy's port, so that the addresses clients learn from the cluster
lead through the proxies too.

Faults, one at a time, every ``--fault-gap`` seconds, in rounds that each take every kind
that applies once, in an order drawn from ``random.Random(--seed)`` (as are every victim and
length):

* ``worker-kill``: SIGKILL a worker process; its slot starts a replacement at once;
* ``worker-pause``: SIGSTOP a worker for the visibility timeout plus 1 to 3 s, then SIGCONT
  (RabbitMQ has no visibility timeout: there the pause outlasts the connection's heartbeat
  timeout, about two 2-s heartbeats, after which RabbitMQ closes the silent connection and
  returns its unacknowledged jobs to the queue; the worker, resumed, finds its connection
  gone and its acknowledgements refused);
* ``network-cut``: the proxy drops every connection and refuses new ones for 2 to 5 s;
* ``network-delay``: the proxy delivers everything 50 to 500 ms late for 3 to 6 s;
* ``broker-kill``: the broker crashes (Redis: SIGKILL; PostgreSQL: ``pg_ctl stop -m
  immediate``), stays down 1 to 3 s, and starts again on its port and data; on a Redis
  Cluster the node is the master serving the soak's queue (its replica takes over after
  the 2-s node timeout, if the master stays down that long, and the master rejoins as a
  replica), on a RabbitMQ cluster the node leading the queue's Raft group (SIGKILL of its
  Erlang VM); a cluster's restart is over once the cluster is whole again;
* ``broker-stop``: the same with a clean shutdown (SIGTERM; ``pg_ctl stop -m fast``;
  ``rabbitmqctl stop``).

SQLite has no server and no network: only the worker faults apply to it. A pause there
counts as hitting every worker: a process stopped inside a write transaction keeps the
database's write lock, so every other process's writes wait until it resumes (seen in
the 10-min soak: no completion anywhere for the 7.8 s of a pause, and a job whose
acknowledgement waited that long ran again after its lease ran out).

The parts, under ``soak/``: ``config.py`` (the options), ``processes.py`` (the worker slots
and producers), ``children.py`` (what runs in them), ``faults.py`` (the injector),
``brokers.py`` and ``clusters.py``, ``proxy.py``, ``ledger.py``, ``run.py`` (the run from
set-up to drain) and ``report.py`` (the rule below, applied to the ledger).

The ledger (``soak/ledger.py``): each producer records every ledger id whose enqueue
returned (confirmed) and retries one that raised with the same id and, by default, the id as
its idempotency key; each handler records its start (before anything else) and its return.
After the faults stop, the producers finish, and the workers drain until every confirmed job
has returned once and the queue holds nothing (or ``--drain-timeout`` passes). Then:

* **lost**: confirmed ids with no run that returned (must be 0; ``never started`` is the part
  with no run at all). A confirmed id in the dead-letter queue counts as lost too.
* **duplicated runs**: runs of a job beyond its first. Each must be explained by a fault: a
  run is *in flight at a fault* if it ran on a worker the fault hit (the victim of a worker
  kill or pause; every worker for a network cut or delay, for a broker restart, and for a
  pause on SQLite), had not returned ``--slack`` seconds before the fault began, and started
  no later than ``--slack`` seconds after it ended. The slack is the time a job spends
  inside a worker out of the handler's sight: a run that returned just before a kill may not
  have been acknowledged yet, and a worker resumed after a pause may start a delivery it had
  been handed (in its buffers or its socket's) before its lease ran out, and another worker
  took it. A run that never returned ended when its worker was killed (or exited on its own,
  a crash the report lists). A broker restart or a network fault counts every worker's runs,
  since it can cost acknowledgements anywhere (a settle that failed, a lease that lapsed
  while renewals could not get through, or, on PostgreSQL, a claim lost in the crash: claims
  commit without waiting for the disk). The rule, per job: runs - 1 <= its runs in flight at
  a fault. Summed over the jobs, the duplicated runs are within the bound, the runs in
  flight at a fault. A job that breaks the rule is listed as an unexplained duplicate (and
  fails the soak).
* **enqueue duplicates**: a ledger id run under more than one job id (a retried enqueue
  stored twice); with idempotency keys there must be none.
* **recovery**: the longest gap between two completions while the producers ran; per
  fault, the time from its end to the next completion, and the time from its start until
  every job in flight on the workers it hit had returned somewhere (for a worker kill,
  about the visibility timeout).

Exit status 0 when nothing was lost, every duplicate is explained, (with keys) no enqueue
was stored twice, and the drain finished in time; 1 otherwise (the ids are listed); 2 when
the broker could not be set up. The working directory (ledger, logs, broker data, and
``faults.jsonl``) is kept when the soak fails or with ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from soak.config import Config  # noqa: E402
from soak.faults import FAULTS  # noqa: E402
from soak.report import print_report  # noqa: E402
from soak.run import run_soak  # noqa: E402


def _pair(text: str) -> tuple[float, float]:
    low, high = (float(x) for x in text.split(","))
    return low, high


def parse_args(argv: list[str] | None = None) -> tuple[Config, argparse.Namespace]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--backend",
        choices=("redis", "sqlite", "postgres", "redis-cluster", "amqp-cluster"),
        default="redis",
    )
    parser.add_argument("--broker-url", help="a broker someone else started (not restarted)")
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of faults")
    parser.add_argument("--seed", type=int, default=18)
    parser.add_argument("--producers", type=int, default=2)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--rate", type=float, default=100.0, help="jobs/s per producer")
    parser.add_argument("--handler-ms", default="20,200", help="a run's time: uniform LOW,HIGH")
    parser.add_argument("--visibility-timeout", type=float, default=5.0)
    parser.add_argument("--fault-gap", type=_pair, default=(2.0, 6.0), help="LOW,HIGH seconds")
    parser.add_argument("--faults", default=",".join(FAULTS), help="the kinds to inject")
    parser.add_argument(
        "--slack",
        type=float,
        default=0.5,
        help="seconds a job spends in a worker out of its handler's sight",
    )
    parser.add_argument("--drain-timeout", type=float, default=120.0)
    parser.add_argument(
        "--give-up",
        type=float,
        default=60.0,
        help="seconds after the end a producer still retries an enqueue",
    )
    parser.add_argument(
        "--keys",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the ledger id as each enqueue's idempotency key",
    )
    parser.add_argument("--progress-every", type=float, default=10.0)
    parser.add_argument("--json", action="store_true", help="the report as one JSON line")
    parser.add_argument("--keep", action="store_true", help="keep the working directory")
    args = parser.parse_args(argv)  # fmt: skip
    faults = tuple(args.faults.split(",")) if args.faults else ()
    unknown = set(faults) - set(FAULTS)
    if unknown:
        parser.error(f"unknown faults {sorted(unknown)}; known: {', '.join(FAULTS)}")
    config = Config(
        backend=args.backend,
        broker_url=args.broker_url,
        duration=args.duration,
        seed=args.seed,
        producers=args.producers,
        workers=args.workers,
        concurrency=args.concurrency,
        rate=args.rate,
        handler_ms=args.handler_ms,
        visibility_timeout=args.visibility_timeout,
        fault_gap=args.fault_gap,
        faults=faults,
        slack=args.slack,
        drain_timeout=args.drain_timeout,
        give_up=args.give_up,
        keys=args.keys,
        progress_every=args.progress_every,
    )
    return config, args


def main(argv: list[str] | None = None) -> int:
    config, args = parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="asyncq-chaos-"))
    work.chmod(0o755)  # the private PostgreSQL runs as its own user and keeps its data in it
    report = run_soak(config, work)
    if report is None:
        shutil.rmtree(work, ignore_errors=True)
        return 2
    report["directory"] = str(work)
    if report["ok"] and not args.keep:
        shutil.rmtree(work, ignore_errors=True)
        report["directory"] = None
    if args.json:
        print(json.dumps(report))
    else:
        print_report(report)
        if report["directory"]:
            print(f"kept: {report['directory']}")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
