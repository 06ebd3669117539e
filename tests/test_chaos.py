"""The chaos soak (``benchmarks/chaos.py``) for a minute in all, on a private broker of each
kind it starts itself: producers and workers in processes of their own while workers are
SIGKILLed and SIGSTOPped past their lease, the network is cut and delayed, and the broker
crashes and restarts. No confirmed job may be lost, and every duplicated run must be
explained by a fault (the rule is in the soak's docstring); no worker process may exit unasked."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import services
from amqp_backend.amqp_support import require_rabbitmq_server
from postgres_backend.postgres_support import postgres_binaries

ROOT = Path(__file__).resolve().parents[1]

SECONDS = {"redis": 25, "redis-cluster": 25, "amqp-cluster": 35, "postgres": 25, "sqlite": 10}
"""Seconds of faults per backend. SQLite has only the worker faults (no server to restart,
no network to cut), so it needs less time to see each of them; a RabbitMQ node's restart
lasts until the cluster is whole again (15 to 20 s), so the RabbitMQ cluster needs more."""


def _require(backend: str) -> None:
    """A private broker needs its programs; in CI a missing one fails the test."""
    if backend in ("redis", "redis-cluster"):
        services.require_redis_server()
    elif backend == "postgres":
        postgres_binaries()
    elif backend == "amqp-cluster":
        require_rabbitmq_server()
        services.require_redis()  # the job records


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("backend", sorted(SECONDS))
def test_a_chaos_soak_loses_no_confirmed_job(backend: str) -> None:
    _require(backend)
    done = subprocess.run(
        [
            sys.executable, str(ROOT / "benchmarks" / "chaos.py"),
            "--backend", backend,
            "--duration", str(SECONDS[backend]),
            "--fault-gap", "1,3",  # more faults in the short time
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=280,
    )  # fmt: skip
    assert done.returncode != 2, done.stderr  # the broker could not be set up
    assert done.stdout, done.stderr
    report = json.loads(done.stdout.splitlines()[-1])
    print(json.dumps({k: v for k, v in report.items() if k != "per_fault"}, indent=1))
    assert report["confirmed"] > 500
    assert report["faults"] >= 2, report["per_fault"]
    assert report["lost"] == 0, (report["lost_ids"], report["directory"])
    assert report["dead_lettered"] == 0, report["dead_lettered_ids"]
    assert report["enqueue_duplicates"] == 0, report["enqueue_duplicate_ids"]
    assert report["drained"], report
    assert report["unexplained_duplicates"] == 0, report["unexplained"]
    # A worker process ends only when the soak ends it: an error it does not expect from
    # its broker (an unmapped driver error) is a bug, even though its slot starts another.
    assert report["worker_exits_unasked"] == [], report["worker_exits_unasked"]
    assert report["duplicated_runs"] <= report["bound"]
    assert done.returncode == 0, done.stderr
