"""The middleware chains: order, what each link sees, refusals, and where asyncq's own links
(tracing, job logs) sit around the App's middleware."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import asyncq
from asyncq.middleware import Attempt, EnqueueNext, ExecuteNext, Outgoing, Settlement

pytestmark = pytest.mark.anyio


class Recorder(asyncq.Middleware):
    """Notes each call, before and after the rest of the chain."""

    def __init__(self, name: str, events: list[str]) -> None:
        self.name, self.events = name, events

    async def enqueue(self, outgoing: Outgoing, call_next: EnqueueNext) -> list[str]:
        self.events.append(f"{self.name} enqueue {len(outgoing.jobs)}")
        for job in outgoing.jobs:
            job.headers[self.name] = "yes"
        ids = await call_next(outgoing)
        self.events.append(f"{self.name} enqueued")
        return ids

    async def execute(self, attempt: Attempt, call_next: ExecuteNext) -> Settlement:
        self.events.append(f"{self.name} execute {sorted(attempt.headers)}")
        settlement = await call_next(attempt)
        self.events.append(f"{self.name} {settlement.outcome.label} attempt {settlement.attempt}")
        return settlement


class EnqueueOnly(asyncq.Middleware):
    async def enqueue(self, outgoing: Outgoing, call_next: EnqueueNext) -> list[str]:
        if outgoing.task == "forbidden":
            raise PermissionError("not on this plan")
        return await call_next(outgoing)


async def test_links_run_in_order_around_enqueue_and_each_attempt(unique: str) -> None:
    events: list[str] = []
    app = asyncq.App(
        f"memory://{unique}",
        middleware=[Recorder("outer", events), Recorder("inner", events)],
    )

    @app.task(name="add")
    async def add(a: int, b: int) -> int:
        events.append("handler")
        return a + b

    async with app:
        job = await add.enqueue(1, 2)
        assert events == ["outer enqueue 1", "inner enqueue 1", "inner enqueued", "outer enqueued"]
        events.clear()
        async with app.worker(concurrency=1):
            assert await job.result(timeout=10) == 3
    assert events == [
        "outer execute ['inner', 'outer']",  # the headers set at enqueue travelled
        "inner execute ['inner', 'outer']",
        "handler",
        "inner succeeded attempt 1",
        "outer succeeded attempt 1",
    ]


async def test_enqueue_many_is_one_pass_through_the_chain(unique: str) -> None:
    events: list[str] = []
    app = asyncq.App(f"memory://{unique}", middleware=[Recorder("tag", events)])

    @app.task(name="echo")
    async def echo() -> dict[str, str]:
        return dict(asyncq.current_job().headers)

    async with app, app.worker(concurrency=2):
        jobs = await echo.enqueue_many([(), (), ()])
        assert events[:2] == ["tag enqueue 3", "tag enqueued"]
        for job in jobs:
            assert await job.result(timeout=10) == {"tag": "yes"}


async def test_an_enqueue_middleware_that_raises_sends_nothing(unique: str) -> None:
    app = asyncq.App(f"memory://{unique}", middleware=[EnqueueOnly()])

    @app.task(name="forbidden")
    async def forbidden() -> None: ...

    @app.task(name="allowed")
    async def allowed() -> None: ...

    async with app:
        with pytest.raises(PermissionError, match="not on this plan"):
            await forbidden.enqueue()
        await allowed.enqueue()
        (stats,) = (await app.queue_stats(["default"])).values()
    assert stats.pending == 1


async def test_a_middleware_sees_the_decided_outcome_of_each_attempt(unique: str) -> None:
    events: list[str] = []
    app = asyncq.App(
        f"memory://{unique}",
        middleware=[Recorder("seen", events)],
        backoff=asyncq.Backoff(base=0.01, cap=0.02),
    )

    @app.task(name="flaky", retries=1)
    async def flaky() -> None:
        raise ValueError("no")

    async with app, app.worker(concurrency=1):
        job = await flaky.enqueue()
        with pytest.raises(asyncq.JobFailed):
            await job.result(timeout=10)
    outcomes = [e for e in events if not e.startswith("seen execute")]
    assert outcomes[-2:] == ["seen retried attempt 1", "seen dead attempt 2"]


async def test_middleware_runs_inside_the_attempts_span(
    unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: provider)
    tracer = provider.get_tracer("test")

    class Spanning(asyncq.Middleware):
        async def execute(self, attempt: Attempt, call_next: ExecuteNext) -> Settlement:
            with tracer.start_as_current_span("middleware"):
                return await call_next(attempt)

    app = asyncq.App(f"memory://{unique}", middleware=[Spanning()])

    @app.task(name="noop")
    async def noop() -> None: ...

    async with app, app.worker(concurrency=1):
        await (await noop.enqueue()).result(timeout=10)
    spans = {s.name: s for s in exporter.get_finished_spans()}
    process, middleware = spans["process default"], spans["middleware"]
    assert middleware.parent is not None
    assert middleware.parent.span_id == process.context.span_id
    assert process.parent is not None  # the producer's span, through the job's headers
    assert process.parent.span_id == spans["send default"].context.span_id
    provider.shutdown()


def test_middleware_must_be_middleware(unique: str) -> None:
    with pytest.raises(TypeError, match="asyncq.Middleware"):
        asyncq.App(f"memory://{unique}", middleware=[object()])  # type: ignore[list-item]


async def test_an_observer_hears_every_outcome_after_the_chain(unique: str) -> None:
    heard: list[tuple[str, str, int]] = []

    class Observer(asyncq.Middleware):
        def finished(self, attempt: Attempt, settlement: Settlement) -> None:
            heard.append((settlement.task, settlement.outcome.label, settlement.attempt))

    app = asyncq.App(f"memory://{unique}", middleware=[Observer()])

    @app.task(name="add")
    async def add(a: int, b: int) -> int:
        return a + b

    @app.task(name="refuse")
    async def refuse() -> None:
        raise asyncq.Reject("no")

    async with app, app.worker(concurrency=1):
        assert await (await add.enqueue(1, 2)).result(timeout=10) == 3
        with pytest.raises(asyncq.JobFailed):
            await (await refuse.enqueue()).result(timeout=10)
    assert heard == [("add", "succeeded", 1), ("refuse", "dead", 1)]
