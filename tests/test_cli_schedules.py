"""``asyncq schedules`` (list, pause, resume, trigger) on every backend that keeps records,
and ``asyncq enqueue --wait`` showing a job's progress, read from the CLI's own process."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import pytest
import services
from apps import scheduled
from click.testing import CliRunner, Result

import asyncq
from asyncq.cli import cli
from asyncq.periodic import fire

TESTS_DIR = Path(__file__).parent


@pytest.fixture(params=services.BROKER_KINDS)
def broker_url(request: pytest.FixtureRequest, unique: str) -> Iterator[str]:
    services.require_broker(request.param)
    url = services.broker_url(request.param, unique)
    scheduled.app.use_broker(url)
    yield url
    services.clean_broker(request.param, unique)


def _env() -> dict[str, str]:
    path = os.pathsep.join(filter(None, [str(TESTS_DIR), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path}


def invoke(url: str, command: str, *args: str, code: int = 0) -> Result:
    full = [*command.split(), "apps.scheduled:app", *args, "--broker", url]
    result = CliRunner().invoke(cli, full)
    assert result.exit_code == code, (result.output, result.exception)
    return result


def listed(url: str) -> dict[str, dict[str, Any]]:
    found = json.loads(invoke(url, "schedules", "--json").stdout)
    return {s["name"]: s for s in found}


def fire_slot(name: str, slot: datetime) -> str:
    async def go() -> str:
        app = scheduled.app
        async with app:
            assert await fire(app, app.schedules[name], slot)
            state = await app.backend.store.schedule_state(name)
            assert state.last_job is not None
            return state.last_job

    return anyio.run(go, backend="asyncio")


def test_schedules_lists_each_with_its_next_and_last_slot(broker_url: str) -> None:
    before = listed(broker_url)
    assert set(before) == {"nightly", "hourly"}
    nightly = before["nightly"]
    assert (nightly["cron"], nightly["timezone"], nightly["every"]) == (
        "0 3 * * *",
        "Europe/Berlin",
        None,
    )
    assert nightly["last_slot"] is None and nightly["last_status"] is None
    assert datetime.fromisoformat(nightly["next_slot"]) > datetime.now(UTC)
    assert before["hourly"]["overlap"] is False

    slot = datetime(2026, 12, 2, 2, 0, tzinfo=UTC)  # 03:00 in Berlin
    job_id = fire_slot("nightly", slot)
    after = listed(broker_url)["nightly"]
    assert after["last_slot"] == slot.isoformat()
    assert after["last_job"] == job_id
    assert after["last_status"] == "queued"  # no worker has run it
    table = invoke(broker_url, "schedules").stdout
    assert "nightly" in table and "2026-12-02T02:00:00+00:00" in table and "queued" in table


def test_pause_and_resume_hold_for_the_broker(broker_url: str) -> None:
    paused = invoke(broker_url, "schedules pause", "hourly")
    assert paused.stdout == "schedule hourly paused\n"
    assert listed(broker_url)["hourly"]["paused"] is True
    assert listed(broker_url)["nightly"]["paused"] is False
    resumed = invoke(broker_url, "schedules resume", "hourly")
    assert resumed.stdout == "schedule hourly resumed\n"
    assert listed(broker_url)["hourly"]["paused"] is False


def test_trigger_enqueues_a_run_now_without_touching_the_slots(broker_url: str) -> None:
    job_id = invoke(broker_url, "schedules trigger", "nightly").stdout.strip().splitlines()[-1]

    async def status() -> asyncq.JobStatus:
        async with scheduled.app:
            return await scheduled.app.get_job(job_id).status()

    assert anyio.run(status, backend="asyncio") is asyncq.JobStatus.QUEUED
    assert listed(broker_url)["nightly"]["last_slot"] is None


@pytest.mark.parametrize("command", ["pause", "resume", "trigger"])
def test_an_unknown_schedule_is_one_error_line(broker_url: str, command: str) -> None:
    result = invoke(broker_url, f"schedules {command}", "weekly", code=2)
    assert "error: apps.scheduled:app: no schedule named 'weekly'" in result.stderr
    assert "hourly, nightly" in result.stderr


def test_schedules_needs_a_record_store(unique: str) -> None:
    services.require_rabbitmq_and_redis()
    url = f"{services.AMQP_URL}?prefix={unique}"
    try:
        result = invoke(url, "schedules", code=2)
    finally:
        services.delete_amqp_entities(rf"{unique}\.")
    assert "keeps no job records, and schedules need them" in result.stderr


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["redis", "amqp"])
async def test_enqueue_wait_shows_the_progress_the_job_reports(kind: str, unique: str) -> None:
    # The check and the clean-up run event loops of their own: not on this test's.
    await anyio.to_thread.run_sync(services.require_broker, kind)
    url = services.broker_url(kind, unique)
    scheduled.app.use_broker(url)
    scheduled.resized = anyio.Event()
    command = [sys.executable, "-m", "asyncq", "enqueue", "apps.scheduled:app", "resize"]
    command += ["--args", "[10]", "--wait", "--timeout", "30", "--broker", url]
    try:
        async with scheduled.app, scheduled.app.worker(concurrency=1, schedules=False):
            async with await anyio.open_process(command, cwd=TESTS_DIR, env=_env()) as waiting:
                assert waiting.stderr is not None and waiting.stdout is not None
                seen = b""
                with anyio.fail_after(20):
                    while b"50% resized 5 of 10" not in seen:
                        seen += await waiting.stderr.receive()
                scheduled.resized.set()  # the CLI has shown it: the job may finish
                out = b""
                with anyio.fail_after(20):
                    async for chunk in waiting.stdout:
                        out += chunk
                    code = await waiting.wait()
        job_id = out.decode().split()[0]
        shown = await anyio.to_thread.run_sync(partial(invoke, url, "job show", job_id, "--json"))
    finally:
        await anyio.to_thread.run_sync(services.clean_broker, kind, unique)
    assert code == 0, (out, seen)
    job_id, result = out.decode().splitlines()
    assert json.loads(result) == 10
    assert f"job {job_id} running: 50% resized 5 of 10" in seen.decode()
    assert json.loads(shown.stdout)["progress"] == {"value": 0.5, "message": "resized 5 of 10"}
