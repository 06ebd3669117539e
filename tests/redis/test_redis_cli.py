"""The operator commands across processes on Redis: a job enqueued by one `asyncq` command,
dead-lettered by a worker process, then listed, replayed and purged by further commands."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from redis_support import claimed_prefix, redis_url

import asyncq

TESTS_DIR = Path(__file__).resolve().parent.parent


@pytest.fixture
def url(unique: str) -> Iterator[str]:
    with claimed_prefix(unique) as prefix:
        yield redis_url(prefix)


def asyncq_cli(url: str, command: str, *args: str, works: bool = False) -> str:
    """Run ``asyncq COMMAND apps.failing:app ARGS --broker URL``; return its stdout.

    ``command`` may be two words (``"dlq list"``)."""
    env = {**os.environ, "PYTHONPATH": str(TESTS_DIR), "CHARGE_WORKS": "1" if works else "0"}
    argv = [*command.split(), "apps.failing:app", *args, "--broker", url]
    done = subprocess.run(
        [sys.executable, "-m", "asyncq", *argv],
        cwd=TESTS_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    return done.stdout


def status(url: str, job_id: str) -> asyncq.JobStatus:
    async def read() -> asyncq.JobStatus:
        async with asyncq.App(url) as app:
            return await app.get_job(job_id).status()

    return anyio.run(read)


def test_dead_letters_listed_replayed_and_purged_by_separate_commands(url: str) -> None:
    job_id = asyncq_cli(url, "enqueue", "charge", "--args", "[42]").strip()
    asyncq_cli(url, "run", "--burst")
    assert status(url, job_id) is asyncq.JobStatus.DEAD

    (dead,) = json.loads(asyncq_cli(url, "dlq list", "--json"))
    assert dead["id"] == job_id
    assert "card processor down" in json.dumps(dead)
    assert json.loads(asyncq_cli(url, "stats", "--json"))["default"]["dead"] == 1

    assert "replayed 1" in asyncq_cli(url, "dlq replay")
    asyncq_cli(url, "run", "--burst", works=True)
    assert status(url, job_id) is asyncq.JobStatus.SUCCEEDED
    assert json.loads(asyncq_cli(url, "dlq list", "--json")) == []

    again = asyncq_cli(url, "enqueue", "charge", "--args", "[43]").strip()
    asyncq_cli(url, "run", "--burst")
    assert status(url, again) is asyncq.JobStatus.DEAD
    assert "purged 1" in asyncq_cli(url, "dlq purge", "--yes")
    assert json.loads(asyncq_cli(url, "dlq list", "--json")) == []
    assert json.loads(asyncq_cli(url, "stats", "--json"))["default"]["dead"] == 0
