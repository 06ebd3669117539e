"""A worker built with an option out of range fails at once, naming the option."""

from __future__ import annotations

from typing import Any

import pytest

import asyncq
from asyncq.worker import Worker

BAD_OPTIONS = {
    "concurrency": ({"concurrency": 0}, "concurrency must be >= 1"),
    "prefetch": ({"concurrency": 2, "prefetch": 3}, "prefetch must be between 0 and concurrency"),
    "shutdown_timeout": ({"shutdown_timeout": -1}, "shutdown_timeout must be >= 0"),
    "heartbeat_interval": ({"heartbeat_interval": 0}, "heartbeat_interval must be > 0 seconds"),
    "metrics_interval": ({"metrics_interval": -2.5}, "metrics_interval must be > 0 seconds"),
    "wait_for_broker": ({"wait_for_broker": -1}, "wait_for_broker must be >= 0 seconds"),
    "queues": ({"queues": ["a", ""]}, "queues must be non-empty queue names"),
    "max_jobs": ({"max_jobs": 0}, "max_jobs must be an integer >= 1, not 0"),
    "max_jobs_float": ({"max_jobs": 2.5}, "max_jobs must be an integer >= 1, not 2.5"),
    "max_memory": ({"max_memory": 0}, "max_memory must be > 0 megabytes, not 0"),
}


@pytest.mark.parametrize(("options", "message"), BAD_OPTIONS.values(), ids=BAD_OPTIONS.keys())
def test_bad_option_is_a_value_error(unique: str, options: dict[str, Any], message: str) -> None:
    app = asyncq.App(f"memory://{unique}")
    with pytest.raises(ValueError, match=message):
        Worker(app, **options)


def test_options_travel_to_a_supervised_worker_as_flags() -> None:
    from asyncq.supervisor import Supervisor

    options = asyncq.WorkerOptions(
        queues=("a", "b"),
        concurrency=7,
        prefetch=2,
        burst=True,
        shutdown_timeout=4.5,
        heartbeat_interval=3.0,
        metrics_interval=2.0,
        wait_for_broker=9.0,
        max_jobs=500,
        max_memory=512.0,
    )
    supervisor = Supervisor.for_workers(["asyncq", "run", "m:app"], options, 2)
    assert supervisor.command == [
        "asyncq", "run", "m:app",
        "--concurrency", "7", "--prefetch", "2", "--shutdown-timeout", "4.5",
        "--queues", "a,b", "--burst", "--heartbeat-interval", "3.0",
        "--metrics-interval", "2.0", "--wait-for-broker", "9.0",
        "--max-jobs", "500", "--max-memory", "512.0",
    ]  # fmt: skip
    assert supervisor.shutdown_timeout == 4.5


@pytest.mark.anyio
async def test_an_app_worker_takes_options_or_their_fields(unique: str) -> None:
    app = asyncq.App(f"memory://{unique}", shutdown_timeout=7.0)
    async with app.worker(asyncq.WorkerOptions(concurrency=3, shutdown_timeout=1.0)) as worker:
        assert (worker.concurrency, worker.shutdown_timeout) == (3, 1.0)
    async with app.worker(concurrency=2) as worker:  # the App's shutdown timeout by default
        assert (worker.concurrency, worker.shutdown_timeout) == (2, 7.0)
    with pytest.raises(ValueError, match="concurrency must be >= 1"):
        asyncq.WorkerOptions(concurrency=2).replace(concurrency=0)
