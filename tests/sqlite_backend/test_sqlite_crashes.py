"""Processes killed on a ``sqlite://`` file: a SIGKILLed worker's job runs again after its
lease, a SIGKILLed producer leaves the file whole with every confirmed job in it, and
producers and workers in separate processes, some killed, lose nothing."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import anyio
import pytest
from harness import Lines, kill_and_take_over

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[2]

_PRODUCER = """
import sys, anyio, asyncq
app = asyncq.App(sys.argv[1])

@app.task(name="crash.job")
async def job(n: int) -> None: ...

async def main() -> None:
    async with app:
        n = 0
        while True:
            batch = await job.enqueue_many([(n + i,) for i in range(50)])
            n += 50
            print(" ".join(j.id for j in batch), flush=True)

anyio.run(main)
"""


async def test_a_sigkilled_workers_job_runs_again_after_its_lease_redelivered(
    url: str, tmp_path: Path
) -> None:
    visibility_timeout = 2.0
    waited = await kill_and_take_over(
        f"{url}?visibility_timeout={visibility_timeout}",
        tmp_path,
        visibility_timeout=visibility_timeout,
    )
    print(f"the lost job restarted {waited:.2f} s after the kill")
    assert visibility_timeout - 1.0 <= waited <= visibility_timeout + 1.0, waited


async def test_a_sigkilled_producer_leaves_the_file_whole_with_every_confirmed_job(
    db_path: Path, url: str
) -> None:
    process = await anyio.open_process(
        [sys.executable, "-c", _PRODUCER, url], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    lines = Lines(process.stdout)
    confirmed: list[str] = []
    async with process:
        for _ in range(40):  # killed in the middle of its enqueues, about 2,000 jobs in
            confirmed += (await lines.expect(lambda line: bool(line), timeout=30)).split()
        process.send_signal(signal.SIGKILL)
        assert await process.wait() == -signal.SIGKILL
    conn = sqlite3.connect(db_path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        stored = {job_id for (job_id,) in conn.execute("SELECT id FROM jobs")}
    finally:
        conn.close()
    assert len(confirmed) == 2000
    assert set(confirmed) <= stored


@pytest.mark.slow
def test_producers_and_workers_in_processes_some_killed_lose_nothing() -> None:
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "sqlite_processes.py"),
            "--producers", "4",
            "--workers", "3",
            "--seconds", "6",
            "--kill-every", "2",
            "--rate", "300",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    report = json.loads(done.stdout.splitlines()[-1])
    print(report)
    assert done.returncode == 0, (report, done.stderr)
    assert report["confirmed"] > 5000
    assert report["lost"] == 0
    assert report["workers_killed"] >= 2
    assert report["duplicated"] <= report["duplicates_allowed"]
    assert report["database_is_locked"] == 0
