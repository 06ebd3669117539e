"""``asyncq web`` as a user runs it: a server process on a SQLite file the test fills too,
Basic auth from the environment, ``--read-only`` refusing a POST with 403, the warning when
it listens beyond loopback unprotected, and clear errors for bad options."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from harness import TESTS_DIR

import asyncq

from .server import serving

pytestmark = pytest.mark.anyio


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[str]:
    url = f"sqlite:///{tmp_path / 'web.db'}"
    app = asyncq.App(url)

    @app.task(name="add", retries=0)
    async def add(a: int, b: int) -> int:
        raise ValueError("no adding today")

    async with app:
        job = await add.enqueue(1, 2)
        async with app.worker(concurrency=1):
            with pytest.raises(asyncq.JobFailed):
                await job.result(timeout=10)
    yield url


async def test_it_serves_behind_basic_auth_from_the_environment(broker: str) -> None:
    secret = {"ASYNCQ_WEB_BASIC_AUTH": "ops:s3cret"}
    async with serving("apps.good:app", "--broker", broker, **secret) as (base, _):
        async with httpx.AsyncClient(base_url=base) as client:
            assert (await client.get("/")).status_code == 401
            wrong = await client.get("/", auth=("ops", "nope"))
            assert wrong.status_code == 401
            page = await client.get("/dead/default", auth=("ops", "s3cret"))
            assert page.status_code == 200
            assert "no adding today" in page.text
            overview = (await client.get("/api/overview", auth=("ops", "s3cret"))).json()
            assert {q["name"]: q["dead"] for q in overview["queues"]}["default"] == 1


async def test_read_only_refuses_a_post_with_403(broker: str) -> None:
    async with serving("apps.good:app", "--broker", broker, "--read-only") as (base, _):
        async with httpx.AsyncClient(base_url=base) as client:
            page = await client.get("/dead/default")
            assert page.status_code == 200 and "Replay" not in page.text
            refused = await client.post("/dead/default/purge", data={"scope": "matching"})
            assert refused.status_code == 403
    app = asyncq.App(broker)
    async with app:
        assert (await app.queue_stats(["default"]))["default"].dead == 1


async def test_listening_beyond_loopback_unprotected_warns(broker: str) -> None:
    async with serving("apps.good:app", "--broker", broker, "--host", "0.0.0.0") as (_, lines):
        assert any("with neither --basic-auth nor --read-only" in line for line in lines.seen)
    async with serving("apps.good:app", "--broker", broker, "--host", "0.0.0.0", "--read-only") as (
        _,
        lines,
    ):
        assert not any("warning" in line for line in lines.seen)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--basic-auth", "nopassword"], "must be USER:PASSWORD"),
        (["--port", "70000"], "--port"),
    ],
)
def test_bad_options_are_one_error_line(args: list[str], message: str) -> None:
    path = os.pathsep.join([str(TESTS_DIR), str(TESTS_DIR.parent)])
    done = subprocess.run(
        [sys.executable, "-m", "asyncq", "web", "apps.good:app", *args],
        cwd=TESTS_DIR,
        env={**os.environ, "PYTHONPATH": path},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr
