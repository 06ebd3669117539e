"""Tracing: a PRODUCER span per enqueue, a CONSUMER span per attempt in the producer's trace,
through the job's headers, on every backend; nothing at all without an SDK."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import asyncq
from asyncq import current_job
from asyncq.backend import Outcome
from asyncq.testing import Recorded, SettleLog

pytestmark = pytest.mark.anyio


def named(spans: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in spans.get_finished_spans() if s.name == name]


async def test_consumer_span_is_a_child_of_the_producer_span(
    app: asyncq.App, spans: InMemorySpanExporter, settled: SettleLog, recorded: Recorded
) -> None:
    @app.task
    async def add(a: int, b: int) -> int:
        return a + b

    async with app, app.worker(concurrency=1):
        job = await add.enqueue(1, 2)
        assert await settled.wait(job.id) == [Outcome.SUCCEEDED]
        await recorded.result(job, 3)
    (send,) = named(spans, "send default")
    (process,) = named(spans, "process default")
    assert send.kind is SpanKind.PRODUCER and process.kind is SpanKind.CONSUMER
    assert send.context is not None and process.context is not None
    assert process.context.trace_id == send.context.trace_id
    assert process.parent is not None and process.parent.span_id == send.context.span_id
    system = app.backend.system
    for span, operation in ((send, "send"), (process, "process")):
        attributes = dict(span.attributes or {})
        assert attributes["messaging.system"] == system
        assert attributes["messaging.destination.name"] == "default"
        assert attributes["messaging.message.id"] == job.id
        assert attributes["messaging.operation.type"] == operation
        assert attributes["asyncq.task"] == add.name
    assert dict(process.attributes or {})["asyncq.attempt"] == 1
    assert process.status.status_code is StatusCode.UNSET


async def test_failed_attempts_record_the_exception_the_retry_and_the_dead_letter(
    app: asyncq.App, spans: InMemorySpanExporter, settled: SettleLog, recorded: Recorded
) -> None:
    @app.task(retries=1)
    async def broken() -> None:
        raise ValueError(f"attempt {current_job().attempt} failed")

    async with app, app.worker(concurrency=1):
        job = await broken.enqueue()
        assert await settled.wait(job.id, 2) == [Outcome.RETRY, Outcome.DEAD]
        await recorded.failed(job)
    first, second = sorted(
        named(spans, "process default"),
        key=lambda s: str(dict(s.attributes or {})["asyncq.attempt"]),
    )
    (send,) = named(spans, "send default")
    assert send.context is not None
    for span in (first, second):
        assert span.context is not None and span.context.trace_id == send.context.trace_id
        assert span.status.status_code is StatusCode.ERROR
        exceptions = [e for e in span.events if e.name == "exception"]
        assert [dict(e.attributes or {})["exception.type"] for e in exceptions] == ["ValueError"]
    assert [e.name for e in first.events] == ["exception", "asyncq.retry"]
    assert [e.name for e in second.events] == ["exception", "asyncq.dead_lettered"]
    assert dict(second.events[1].attributes or {})["error.type"] == "ValueError"


async def test_enqueue_many_links_one_send_span_to_a_create_span_per_job(
    app: asyncq.App, spans: InMemorySpanExporter, settled: SettleLog, recorded: Recorded
) -> None:
    @app.task
    async def double(n: int) -> int:
        return 2 * n

    async with app, app.worker(concurrency=2):
        jobs = await double.enqueue_many([(1,), (2,)])
        for job, doubled in zip(jobs, [2, 4], strict=True):
            assert await settled.wait(job.id) == [Outcome.SUCCEEDED]
            await recorded.result(job, doubled)
    creates = named(spans, "create default")
    (send,) = named(spans, "send default")
    assert dict(send.attributes or {})["messaging.batch.message_count"] == 2
    assert {link.context.span_id for link in send.links} == {
        c.context.span_id for c in creates if c.context is not None
    }
    by_job = {dict(c.attributes or {})["messaging.message.id"]: c for c in creates}
    assert set(by_job) == {job.id for job in jobs}
    for process in named(spans, "process default"):
        create = by_job[dict(process.attributes or {})["messaging.message.id"]]
        assert create.context is not None and process.parent is not None
        assert process.parent.span_id == create.context.span_id


async def test_without_an_sdk_no_context_travels(app: asyncq.App, settled: SettleLog) -> None:
    seen: list[dict[str, str]] = []

    @app.task
    async def look() -> None:
        seen.append(dict(current_job().headers))

    async with app, app.worker(concurrency=1):
        job = await look.options(headers={"tenant": "a"}).enqueue()
        assert await settled.wait(job.id) == [Outcome.SUCCEEDED]
    assert seen == [{"tenant": "a"}]
