"""The examples are programs users copy: each one runs here."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from examples import fastapi_app
from examples.fastapi_app import api

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_quickstart_runs() -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "quickstart.py")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout.splitlines()
    assert out[-1] == "done"
    assert any(line.startswith("add(2, 3) = 5 ") for line in out)
    assert any("10 adds -> [0, 2, 4, 6, 8, 10, 12, 14, 16, 18]" in line for line in out)
    assert any("fetched https://example.com/ on attempt 2" in line for line in out)
    assert "remind (delay=0.3 s) is scheduled" in out
    assert any(line.startswith("remind: reminder: stand up ") for line in out)
    assert any(line.startswith("charge(-5) failed: Reject: cannot charge -5") for line in out)
    assert "queue default: pending=0 scheduled=0 running=0 dead=1" in out


@asynccontextmanager
async def serving(broker: str) -> AsyncIterator[httpx.AsyncClient]:
    """The example API with its lifespan running: httpx's ASGI transport runs none itself."""
    fastapi_app.app.use_broker(broker)  # a broker of the test's own
    async with (
        api.router.lifespan_context(api),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=api), base_url="http://test") as c,
    ):
        yield c


@pytest.mark.anyio
async def test_enqueue_then_result(unique: str) -> None:
    async with serving(f"memory://{unique}") as client:
        posted = await client.post("/jobs/add", json={"a": 2, "b": 3.5})
        assert posted.status_code == 202
        job_id = posted.json()["id"]

        got = await client.get(f"/jobs/{job_id}/result", params={"timeout": 10})
        assert got.status_code == 200
        assert got.json() == {"id": job_id, "status": "succeeded", "result": 5.5}

        info = await client.get(f"/jobs/{job_id}")
        assert info.status_code == 200
        assert info.json()["status"] == "succeeded"


@pytest.mark.anyio
async def test_failed_job_is_422_with_its_error(unique: str) -> None:
    async with serving(f"memory://{unique}") as client:
        posted = await client.post("/jobs/divide", json={"a": 1, "b": 0})
        job_id = posted.json()["id"]

        got = await client.get(f"/jobs/{job_id}/result", params={"timeout": 10})
        assert got.status_code == 422
        body = got.json()
        assert body["status"] == "dead"
        assert body["error"]["type"] == "ZeroDivisionError"


@pytest.mark.anyio
async def test_unknown_job_is_404(unique: str) -> None:
    async with serving(f"memory://{unique}") as client:
        assert (await client.get("/jobs/no-such-job/result")).status_code == 404
        assert (await client.get("/jobs/no-such-job")).status_code == 404
        assert (await client.delete("/jobs/no-such-job")).status_code == 404


@pytest.mark.anyio
async def test_timeout_is_504_then_cancel(unique: str) -> None:
    async with serving(f"memory://{unique}") as client:
        posted = await client.post("/jobs/add", params={"delay": 3600}, json={"a": 1, "b": 1})
        assert posted.json()["status"] == "scheduled"
        job_id = posted.json()["id"]

        waited = await client.get(f"/jobs/{job_id}/result", params={"timeout": 0.05})
        assert waited.status_code == 504
        assert waited.json()["status"] == "scheduled"

        assert (await client.delete(f"/jobs/{job_id}")).status_code == 200
        assert (await client.get(f"/jobs/{job_id}/result")).status_code == 409
        assert (await client.delete(f"/jobs/{job_id}")).status_code == 409


@pytest.mark.anyio
async def test_no_inprocess_worker_when_disabled(
    unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ASYNCQ_INPROCESS_WORKER", "0")
    async with serving(f"memory://{unique}") as client:
        posted = await client.post("/jobs/add", json={"a": 1, "b": 1})
        job_id = posted.json()["id"]
        waited = await client.get(f"/jobs/{job_id}/result", params={"timeout": 0.2})
        assert waited.status_code == 504
        assert waited.json()["status"] == "queued"  # enqueued, and nobody took it


@pytest.mark.anyio
async def test_bad_input_is_rejected_before_enqueue(unique: str) -> None:
    async with serving(f"memory://{unique}") as client:
        posted = await client.post("/jobs/add", json={"a": "one", "b": 1})
        assert posted.status_code == 422
        assert "detail" in posted.json()
