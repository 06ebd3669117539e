"""Snooze: ``raise asyncq.Snooze(delay)`` runs the job again after ``delay`` with the same
attempt number, spending none of its retries; it is SCHEDULED meanwhile, and its record
counts the snoozes; logs and spans name it as its own outcome."""

from __future__ import annotations

import logging
import time

import anyio
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

import asyncq
from asyncq import JobStatus, current_job
from asyncq.backend import Outcome
from asyncq.testing import Recorded, SettleLog

pytestmark = pytest.mark.anyio


async def test_a_snoozed_job_runs_again_after_its_delay_with_the_same_attempt(
    app: asyncq.App, settled: SettleLog, recorded: Recorded
) -> None:
    delay = 0.3
    runs: list[tuple[int, float]] = []

    @app.task(retries=0)  # a snooze spends no attempt: no retries are needed
    async def poll() -> int:
        runs.append((current_job().attempt, time.monotonic()))
        if len(runs) == 1:
            raise asyncq.Snooze(delay)
        return current_job().attempt

    async with app, app.worker(concurrency=1):
        job = await poll.enqueue()
        assert await settled.wait(job.id, 2) == [Outcome.SNOOZE, Outcome.SUCCEEDED]
        await recorded.result(job, 1)
        if info := await recorded.info(job):
            assert info.snoozes == 1
            assert info.attempt == 1
    assert [attempt for attempt, _ in runs] == [1, 1]
    gap = runs[1][1] - runs[0][1]
    assert delay <= gap <= delay + max(0.1 * delay, 0.1), gap


async def test_snoozes_spend_no_retries_and_a_failure_after_them_does(
    app: asyncq.App, settled: SettleLog, recorded: Recorded
) -> None:
    attempts: list[int] = []

    @app.task(retries=1)
    async def wait_for_file() -> str:
        attempts.append(current_job().attempt)
        if len(attempts) <= 3:
            raise asyncq.Snooze(0)
        if len(attempts) == 4:
            raise ConnectionError("the file server hung up")
        return "read"

    async with app, app.worker(concurrency=1):
        job = await wait_for_file.enqueue()
        outcomes = await settled.wait(job.id, 5)
        await recorded.result(job, "read")
        if info := await recorded.info(job):
            assert (info.snoozes, info.attempt) == (3, 2)
    assert outcomes == [Outcome.SNOOZE] * 3 + [Outcome.RETRY, Outcome.SUCCEEDED]
    assert attempts == [1, 1, 1, 1, 2]


@pytest.mark.needs_store
async def test_a_snoozed_job_is_scheduled_until_it_runs_again(
    app: asyncq.App, settled: SettleLog
) -> None:
    ran = anyio.Event()

    @app.task
    async def later() -> None:
        if not ran.is_set():
            ran.set()
            raise asyncq.Snooze(60)

    async with app, app.worker(concurrency=1):
        before = time.time()
        job = await later.enqueue()
        assert await settled.wait(job.id) == [Outcome.SNOOZE]
        info = await job.info()
        stats = (await app.queue_stats([app.default_queue]))[app.default_queue]
        assert await job.cancel()  # it would run again in a minute
    assert info.status is JobStatus.SCHEDULED
    assert info.snoozes == 1
    assert info.error is None  # a snooze is not a failure
    assert info.eta is not None and before + 60 <= info.eta <= time.time() + 60
    assert stats.scheduled == 1 and stats.pending == 0


async def test_a_snooze_is_its_own_outcome_in_logs_and_spans(
    app: asyncq.App,
    settled: SettleLog,
    spans: InMemorySpanExporter,
    caplog: pytest.LogCaptureFixture,
) -> None:
    runs: list[int] = []

    @app.task
    async def poll() -> None:
        runs.append(current_job().attempt)
        if len(runs) == 1:
            raise asyncq.Snooze(0)

    caplog.set_level(logging.INFO, logger="asyncq.job")
    async with app, app.worker(concurrency=1):
        job = await poll.enqueue()
        assert await settled.wait(job.id, 2) == [Outcome.SNOOZE, Outcome.SUCCEEDED]
    logged = [r for r in caplog.records if getattr(r, "job", {}).get("job_id") == job.id]
    assert [r.job["outcome"] for r in logged] == ["snoozed", "succeeded"]  # type: ignore[attr-defined]
    assert logged[0].levelno == logging.INFO  # not a failure: no warning
    assert "snoozed after" in logged[0].getMessage()
    attempts = [s for s in spans.get_finished_spans() if s.name == "process default"]
    events = sorted(([e.name for e in s.events] for s in attempts), key=len, reverse=True)
    assert events == [["asyncq.snooze"], []]
    assert all(s.status.status_code is StatusCode.UNSET for s in attempts)
