"""The command line on a ``sqlite://`` file, each command its own process: a job enqueued by
one command, dead-lettered by a worker process, listed, replayed and purged by others; a live
worker listed by ``asyncq workers``; and the embedded default, found in the working
directory, whose absolute path ``asyncq stats`` prints."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import anyio
import pytest
from harness import Lines, run_asyncq, worker_process

pytestmark = pytest.mark.anyio

TESTS_DIR = Path(__file__).resolve().parent.parent


def asyncq_cli(
    *argv: str, cwd: Path = TESTS_DIR, works: bool = False
) -> subprocess.CompletedProcess[str]:
    done = run_asyncq(*argv, cwd=cwd, env={"CHARGE_WORKS": "1" if works else "0"})
    assert "database is locked" not in done.stderr
    return done


def cli(url: str, command: str, *args: str, works: bool = False) -> str:
    return asyncq_cli(
        *command.split(), "apps.failing:app", *args, "--broker", url, works=works
    ).stdout


def test_dead_letters_listed_replayed_and_purged_by_separate_commands(url: str) -> None:
    job_id = cli(url, "enqueue", "charge", "--args", "[42]").strip()
    cli(url, "run", "--burst")
    (dead,) = json.loads(cli(url, "dlq list", "--json"))
    assert dead["id"] == job_id
    assert "card processor down" in json.dumps(dead)
    assert json.loads(cli(url, "stats", "--json"))["default"]["dead"] == 1

    assert "replayed 1" in cli(url, "dlq replay")
    cli(url, "run", "--burst", works=True)
    assert json.loads(cli(url, "dlq list", "--json")) == []
    assert json.loads(cli(url, "job show", job_id, "--json"))["status"] == "succeeded"


async def test_a_live_worker_process_is_listed_and_runs_what_a_command_enqueues(
    url: str,
) -> None:
    async with worker_process("apps.observed:app", url, "--concurrency", "3") as process:
        stderr = Lines(process.stderr)
        line = await stderr.expect(lambda line: "started: queues=" in line, timeout=30)
        assert f"broker={url} (the sqlite file {url.removeprefix('sqlite:///')})" in line
        workers = json.loads(await anyio.to_thread.run_sync(lambda: cli(url, "workers", "--json")))
        assert [(w["pid"], w["concurrency"]) for w in workers] == [(process.pid, 3)]
        process.terminate()
        assert await process.wait() == 0


def test_the_embedded_default_is_found_in_the_working_directory(tmp_path: Path) -> None:
    app = "examples.quickstart_tasks:app"
    job_id = asyncq_cli(
        "enqueue", app, "examples.quickstart_tasks.add", "--args", "[2, 3]", cwd=tmp_path
    ).stdout.strip()
    assert (tmp_path / "asyncq.db").exists()
    asyncq_cli("run", app, "--burst", cwd=tmp_path)
    job = json.loads(asyncq_cli("job", "show", app, job_id, "--json", cwd=tmp_path).stdout)
    assert job["status"] == "succeeded" and job["result"] == 5
    stats = asyncq_cli("stats", app, cwd=tmp_path)
    assert f"broker: sqlite:///asyncq.db (the sqlite file {tmp_path}/asyncq.db)" in stats.stderr
    assert "the embedded default" in stats.stderr
    # From another directory, the same command names another file, and says so.
    other = tmp_path / "elsewhere"
    other.mkdir()
    elsewhere = asyncq_cli("stats", app, cwd=other)
    assert f"(the sqlite file {other}/asyncq.db)" in elsewhere.stderr
