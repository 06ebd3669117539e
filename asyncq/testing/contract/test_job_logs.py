"""Job outcome logs: one record per attempt on the ``asyncq.job`` logger, carrying the job's
fields, on every backend; and the JSON formatter behind ``--log-format json``."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from typing import Any

import anyio
import orjson
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import asyncq
from asyncq.backend import Outcome
from asyncq.joblog import JsonFormatter
from asyncq.testing import Recorded, SettleLog

pytestmark = pytest.mark.anyio


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def jobs(self) -> list[dict[str, Any]]:
        return [r.job for r in self.records if hasattr(r, "job")]


@pytest.fixture
def records() -> Iterator[Records]:
    handler = Records()
    logger = logging.getLogger("asyncq.job")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


async def test_one_line_per_outcome_with_the_jobs_fields(
    app: asyncq.App, records: Records, settled: SettleLog, recorded: Recorded
) -> None:
    @app.task(name="add")
    async def add(a: int, b: int) -> int:
        return a + b

    @app.task(name="broken", retries=1, backoff=asyncq.Backoff(base=0.01, jitter=False))
    async def broken() -> None:
        raise ValueError("no luck")

    async with app, app.worker(concurrency=1):
        ok = await add.enqueue(1, 2)
        assert await settled.wait(ok.id, timeout=10) == [Outcome.SUCCEEDED]
        await recorded.result(ok, 3)
        failing = await broken.enqueue()
        assert await settled.wait(failing.id, 2, timeout=10) == [Outcome.RETRY, Outcome.DEAD]
        await recorded.failed(failing)

    succeeded, retried, dead = records.jobs()
    assert succeeded["job_id"] == ok.id
    assert (succeeded["task"], succeeded["queue"], succeeded["attempt"]) == ("add", "default", 1)
    assert succeeded["outcome"] == "succeeded" and succeeded["duration_ms"] >= 0
    assert succeeded["trace_id"] is None  # no tracer provider in this test
    assert (retried["job_id"], retried["outcome"], retried["attempt"]) == (failing.id, "retried", 1)
    assert (retried["error_type"], retried["error"]) == ("ValueError", "no luck")
    assert 0 <= retried["retry_in_s"] <= 0.01
    assert (dead["job_id"], dead["outcome"], dead["attempt"]) == (failing.id, "dead", 2)
    levels = [r.levelno for r in records.records if hasattr(r, "job")]
    assert levels == [logging.INFO, logging.WARNING, logging.ERROR]
    text = records.records[-1].getMessage()
    assert text.startswith(f"job {failing.id} broken on default attempt 2 failed in ")
    assert text.endswith("dead-lettered: ValueError: no luck")


async def test_a_job_returned_at_shutdown_is_logged_with_its_own_attempt(
    app: asyncq.App, records: Records, settled: SettleLog, recorded: Recorded
) -> None:
    second_started = anyio.Event()

    @app.task(name="flaky", retries=3, backoff=asyncq.Backoff(base=0.01, jitter=False))
    async def flaky() -> None:
        if asyncq.current_job().attempt == 1:
            raise ValueError("first try fails")
        second_started.set()
        await anyio.sleep_forever()  # until the worker stops: it goes back to the queue

    async with app:
        async with app.worker(concurrency=1, shutdown_timeout=0.1):
            job = await flaky.enqueue()
            with anyio.fail_after(10):
                await second_started.wait()
        assert settled.outcomes.get(job.id) == [Outcome.RETRY, Outcome.RELEASE]
        if info := await recorded.info(job):
            assert info.attempt == 2

    retried, released = records.jobs()
    assert (retried["outcome"], retried["attempt"]) == ("retried", 1)
    assert (released["job_id"], released["task"]) == (job.id, "flaky")
    assert (released["outcome"], released["attempt"]) == ("released", 2)
    text = records.records[-1].getMessage()
    assert text.startswith(f"job {job.id} flaky on default attempt 2 returned to its queue")


async def test_a_traced_attempt_logs_its_trace_id(
    app: asyncq.App,
    records: Records,
    spans: InMemorySpanExporter,
    settled: SettleLog,
    recorded: Recorded,
) -> None:
    @app.task(name="add")
    async def add(a: int, b: int) -> int:
        return a + b

    async with app, app.worker(concurrency=1):
        job = await add.enqueue(1, 2)
        assert await settled.wait(job.id, timeout=10) == [Outcome.SUCCEEDED]
        await recorded.result(job, 3)
    (logged,) = records.jobs()
    (process,) = [s for s in spans.get_finished_spans() if s.name == "process default"]
    assert process.context is not None
    assert logged["trace_id"] == f"{process.context.trace_id:032x}"
    assert records.records[-1].getMessage().endswith(f"(trace {logged['trace_id']})")


def test_json_formatter_puts_the_jobs_fields_at_the_top_level() -> None:
    record = logging.LogRecord(
        "asyncq.job", logging.INFO, __file__, 1, "job %s done", ("j1",), None
    )
    record.job = {"job_id": "j1", "task": "add", "duration_ms": 1.5, "trace_id": None}
    entry = orjson.loads(JsonFormatter().format(record))
    assert entry["message"] == "job j1 done"
    assert (entry["level"], entry["logger"]) == ("info", "asyncq.job")
    assert entry["time"].endswith("+00:00")
    assert (entry["job_id"], entry["task"], entry["duration_ms"]) == ("j1", "add", 1.5)

    try:
        raise RuntimeError("broken")
    except RuntimeError:
        failed = logging.LogRecord("asyncq", logging.ERROR, __file__, 1, "oops", (), sys.exc_info())
    entry = orjson.loads(JsonFormatter().format(failed))
    assert entry["message"] == "oops" and "RuntimeError: broken" in entry["exception"]
