"""What an operator sees of real worker processes, on any broker shared between processes:
Prometheus metrics scraped from ``asyncq run --metrics-port``, JSON log lines, and
``asyncq workers`` before and after a worker is killed. The broker-specific test modules
run these checks with a URL of their own."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import anyio
from anyio.abc import Process
from harness import TESTS_DIR, Lines, worker_env, worker_process

import asyncq


@asynccontextmanager
async def worker(url: str, *options: str) -> AsyncIterator[tuple[Process, Lines]]:
    """An ``asyncq run`` process for apps.observed, and the lines of its log."""
    async with worker_process(
        "apps.observed:app", url, *options, stdout=subprocess.DEVNULL
    ) as process:
        yield process, Lines(process.stderr)


async def cli(url: str, *args: str) -> str:
    argv = [sys.executable, "-m", "asyncq", *args, "apps.observed:app", "--broker", url]
    done = await anyio.run_process(argv, cwd=TESTS_DIR, env=worker_env(TESTS_DIR), check=False)
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout.decode()


def contains(part: str, text: str) -> bool:
    return part in text


def scrape(port: int) -> dict[str, float]:
    """The samples of ``/metrics``, as ``'name{labels}': value``."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def sample(samples: dict[str, float], name: str, **labels: str) -> float | None:
    """The value of the series ``name`` whose labels include ``labels``."""
    for series, value in samples.items():
        metric, _, rest = series.partition("{")
        found = dict(re.findall(r'(\w+)="([^"]*)"', rest))
        if metric == name and labels.items() <= found.items():
            return value
    return None


async def enqueue(url: str, task_name: str, count: int) -> list[str]:
    """Enqueue ``count`` jobs of apps.observed's task ``task_name``, by name."""
    app = asyncq.App(url)

    @app.task(name=task_name)
    async def stand_in() -> None:  # only its name matters: the worker runs apps.observed's
        raise AssertionError("not run here")

    async with app:
        jobs = await stand_in.enqueue_many([()] * count)
    return [job.id for job in jobs]


async def metrics_port_serves_depths_and_logs_are_json(url: str) -> None:
    """Scrape ``/metrics`` of a real ``asyncq run --metrics-port`` process: the depth of a
    queue with pending jobs and of its DLQ, and job outcomes; its log lines are JSON."""
    refused = await enqueue(url, "refuse", 2)
    await enqueue(url, "hold", 5)
    options = ["--concurrency", "1", "--prefetch", "0", "--metrics-interval", "0.2"]
    options += ["--metrics-port", "0", "--metrics-address", "127.0.0.1", "--log-format", "json"]
    async with worker(url, *options) as (_, lines):
        line = await lines.expect(lambda text: "/metrics" in text, timeout=30)
        found = re.search(r":(\d+)/metrics", json.loads(line)["message"])
        assert found is not None
        port = int(found.group(1))
        # Each refusal is one JSON log line with the job's fields.
        for job_id in refused:
            entry = json.loads(await lines.expect(partial(contains, job_id), timeout=30))
            assert (entry["level"], entry["logger"], entry["outcome"]) == (
                "error",
                "asyncq.job",
                "dead",
            )
            assert (entry["task"], entry["queue"], entry["attempt"]) == ("refuse", "default", 1)
            assert (entry["error_type"], entry["error"]) == ("Reject", "refused on purpose")
        # Two refusals die, then one hold runs for good and four wait behind it. The
        # depths are polled every 0.2 s: scrape until a poll has seen all that.
        names = ("queue_depth_pending", "queue_depth_running", "queue_dlq_depth")
        with anyio.fail_after(30):
            while True:
                samples = await anyio.to_thread.run_sync(scrape, port)
                depths = [sample(samples, name, queue="default") for name in names]
                if depths == [4.0, 1.0, 2.0]:
                    break
        assert sample(samples, "queue_depth_scheduled", queue="default") == 0.0
        assert sample(samples, "asyncq_jobs_in_flight", queue="default") == 1.0
        dead = {"task": "refuse", "outcome": "dead"}
        assert sample(samples, "asyncq_jobs_total", queue="default", **dead) == 2.0
        assert sample(samples, "asyncq_job_duration_seconds_count", **dead) == 2.0
        assert sample(samples, "asyncq_job_queue_wait_seconds_count", task="refuse") == 2.0


async def listed_workers(url: str) -> dict[str, dict[str, object]]:
    """What `asyncq workers --json` lists, by worker id."""
    return {w["id"]: w for w in json.loads(await cli(url, "workers", "--json"))}


async def listed_once_started(url: str, lines: Lines) -> tuple[str, dict[str, dict[str, object]]]:
    """The id of the worker whose log ``lines`` are, once `asyncq workers` lists it (live),
    and that listing."""
    line = await lines.expect(lambda text: "started: queues=" in text, timeout=30)
    worker_id = line.split("worker ", 1)[1].split()[0]
    with anyio.fail_after(30):  # the first heartbeat goes out as the worker starts
        while worker_id not in (found := await listed_workers(url)):
            pass
    assert found[worker_id]["gone"] is False
    return worker_id, found


async def workers_shows_a_worker_then_shows_it_gone_once_killed(url: str) -> None:
    """`asyncq workers` lists a running worker process as live, then as gone (and not with
    `--live`) once it is SIGKILLed."""
    options = ["--heartbeat-interval", "0.2", "--queues", "default"]
    async with worker(url, *options) as (process, lines):
        worker_id, found = await listed_once_started(url, lines)
        listed = partial(listed_workers, url)
        assert found[worker_id]["pid"] == process.pid
        assert found[worker_id]["queues"] == ["default"]
        table = await cli(url, "workers")
        assert re.search(rf"^{re.escape(worker_id)}\s+live\s+default\b", table, re.MULTILINE)

        process.send_signal(signal.SIGKILL)
        await process.wait()
        # Three missed beats (0.6 s) and it is gone; not before, since it beat until killed.
        with anyio.fail_after(30):
            while not (found := await listed())[worker_id]["gone"]:
                pass
        live = json.loads(await cli(url, "workers", "--json", "--live"))
        assert worker_id not in [w["id"] for w in live]
        table = await cli(url, "workers")
        assert re.search(rf"^{re.escape(worker_id)}\s+gone\s+default\b", table, re.MULTILINE)


async def a_killed_worker_is_gone_as_soon_as_its_connections_close(url: str) -> None:
    """A SIGKILLed worker is listed as gone as soon as the broker sees its connections
    close, long before its missed heartbeats would say so (one a minute here)."""
    options = ["--heartbeat-interval", "60", "--queues", "default"]
    async with worker(url, *options) as (process, lines):
        worker_id, _ = await listed_once_started(url, lines)
        listed = partial(listed_workers, url)
        process.send_signal(signal.SIGKILL)
        await process.wait()
        killed = time.monotonic()
        with anyio.fail_after(10):  # the broker closes a dead peer's connections at once
            while not (await listed())[worker_id]["gone"]:
                pass
        assert time.monotonic() - killed < 10  # its record lives on for three minutes
        live = json.loads(await cli(url, "workers", "--json", "--live"))
        assert worker_id not in [w["id"] for w in live]
