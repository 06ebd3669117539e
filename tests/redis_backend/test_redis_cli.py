"""The operator commands across processes on Redis: a job enqueued by one `asyncq` command,
dead-lettered by a worker process, then listed, replayed and purged by further commands; and
a Redis that refuses the URL (a db it does not have, wrong credentials), which is a usage
error (exit 2, one line), unlike a Redis that cannot be reached (exit 1)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import anyio
import pytest
import services
from harness import run_asyncq

import asyncq

from .redis_support import PrivateRedis, free_port

TESTS_DIR = Path(__file__).resolve().parent.parent


def asyncq_cli(url: str, command: str, *args: str, works: bool = False) -> str:
    """Run ``asyncq COMMAND apps.failing:app ARGS --broker URL``; return its stdout.

    ``command`` may be two words (``"dlq list"``)."""
    argv = [*command.split(), "apps.failing:app", *args, "--broker", url]
    return run_asyncq(*argv, env={"CHARGE_WORKS": "1" if works else "0"}).stdout


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


def test_enqueue_priority_puts_the_job_at_that_priority(url: str, prefix: str) -> None:
    job_id = asyncq_cli(url, "enqueue", "charge", "--args", "[44]", "--priority", "7").strip()

    async def stream_of_7() -> list[bytes]:
        async with asyncq.App(url) as app:
            client = app.backend.client  # type: ignore[attr-defined]
            entries = await client.xrange(f"{prefix}:{{default}}:stream:7")
            return [fields[b"id"] for _, fields in entries]

    assert anyio.run(stream_of_7) == [job_id.encode()]


# -- a Redis that refuses the URL ------------------------------------------------------------
def _one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    """The one line a failed command printed: its whole stderr."""
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    return lines[0]


def _stats(broker: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "asyncq", "stats", "apps.good:app", "--broker", broker],
        cwd=TESTS_DIR,
        env={**os.environ, "PYTHONPATH": str(TESTS_DIR)},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_db_the_server_does_not_have_is_a_usage_error_naming_the_dbs_it_has() -> None:
    services.require_redis()
    done = _stats("redis://127.0.0.1:6379/99")
    assert done.returncode == 2, done.stderr
    line = _one_error_line(done)
    assert re.search(
        r"Redis at redis://127\.0\.0\.1:6379/99 has no db 99 \(it has (\d+) "
        r"databases: 0\.\.\d+\)$",
        line,
    ), line


def test_a_worker_on_a_db_the_server_does_not_have_exits_2() -> None:
    services.require_redis()
    done = subprocess.run(
        [sys.executable, "-m", "asyncq", "run", "apps.good:app", "--burst"]
        + ["--broker", "redis://127.0.0.1:6379/99"],
        cwd=TESTS_DIR,
        env={**os.environ, "PYTHONPATH": str(TESTS_DIR)},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "has no db 99" in errors[0], done.stderr
    assert "Traceback" not in done.stderr


def test_a_user_the_server_does_not_know_is_a_usage_error() -> None:
    services.require_redis()
    done = _stats("redis://nobody:wrong@127.0.0.1:6379/15")
    assert done.returncode == 2, done.stderr
    line = _one_error_line(done)
    assert "refused the URL's credentials" in line and "wrong" not in line, line  # redacted


@pytest.mark.anyio
async def test_a_wrong_or_missing_password_is_a_usage_error(tmp_path: Path) -> None:
    server = PrivateRedis(
        services.require_redis_server(), tmp_path, "--requirepass", "right-password"
    )
    try:
        await server.start()
        port = server.port
        wrong = await anyio.to_thread.run_sync(_stats, f"redis://:wrong@127.0.0.1:{port}/0")
        missing = await anyio.to_thread.run_sync(_stats, f"redis://127.0.0.1:{port}/0")
        right = await anyio.to_thread.run_sync(
            _stats, f"redis://:right-password@127.0.0.1:{port}/0"
        )
    finally:
        await server.kill()
    assert (wrong.returncode, missing.returncode, right.returncode) == (2, 2, 0), (
        wrong.stderr,
        missing.stderr,
        right.stderr,
    )
    assert "refused the URL's credentials" in _one_error_line(wrong)
    assert "refused the URL's credentials" in _one_error_line(missing)  # NOAUTH


def test_an_unreachable_redis_stays_a_runtime_failure() -> None:
    done = _stats(f"redis://127.0.0.1:{free_port()}/0")
    assert done.returncode == 1, done.stderr
    assert "cannot reach the broker" in _one_error_line(done)
