"""Dead-letter retention: with the URL options ``dead_ttl`` (seconds) and ``dead_max`` (per
queue), a backend's ``trim_dead`` removes the letters older than the TTL, then the oldest
beyond the bound, and says how many of each; a worker applies it on a clock, and logs and
counts (``asyncq.dead_letters.removed``) what went. Without the options nothing goes."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import anyio
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

import asyncq
from asyncq.records import TrimmedDeadLetters
from asyncq.testing import Broker

pytestmark = pytest.mark.anyio


def refusing(app: asyncq.App) -> asyncq.Task[[str], None]:
    @app.task(name="refuse")
    async def refuse(name: str) -> None:
        raise asyncq.Reject(name)

    return refuse


async def dead_names(app: asyncq.App) -> list[str]:
    """The arguments of the queue's dead letters, oldest first."""
    import orjson

    letters = await app.dead_letters(app.default_queue)
    return [orjson.loads(letter.body)["args"][0] for letter in letters]


async def test_dead_ttl_then_dead_max_remove_the_oldest_and_say_how_many(broker: Broker) -> None:
    plain = broker.app()  # no bounds: its workers remove nothing
    refuse = refusing(plain)
    q = plain.default_queue
    async with plain:
        await refuse.enqueue("old")
        await plain.run_worker(burst=True)
        await anyio.sleep(1.0)  # not a wait for something: the age being tested
        await refuse.enqueue_many([("new1",), ("new2",), ("new3",)])
        await plain.run_worker(burst=True)
        assert await dead_names(plain) == ["old", "new1", "new2", "new3"]
        assert await plain.backend.trim_dead([q]) == []  # unbounded: nothing goes

    bounded = broker.app(dead_ttl=0.8, dead_max=2)
    async with bounded:
        trims = await bounded.backend.trim_dead([q, "never-used"])
        assert trims == [TrimmedDeadLetters(q, expired=1, beyond_max=1)]
        assert await dead_names(bounded) == ["new2", "new3"]
        assert await bounded.backend.trim_dead([q]) == []  # within both bounds now
        stats = (await bounded.queue_stats([q]))[q]
    assert stats.dead == 2


async def test_a_worker_applies_the_bound_and_logs_and_counts_it(
    broker: Broker, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = broker.app(dead_max=1)
    refuse = refusing(app)
    q = app.default_queue
    trimmed = anyio.Event()
    trim = app.backend.trim_dead

    removed_by_worker = 0

    async def watched(queues: Sequence[str]) -> list[TrimmedDeadLetters]:
        nonlocal removed_by_worker
        found = await trim(queues)
        removed_by_worker += sum(t.beyond_max for t in found)
        if removed_by_worker >= 2:  # in one trim, or two if one came between two deaths
            trimmed.set()
        return found

    monkeypatch.setattr(app.backend, "trim_dead", watched)
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    caplog.set_level(logging.INFO, logger="asyncq.retention")
    try:
        async with app, app.worker(concurrency=1, meter_provider=provider):
            await refuse.enqueue_many([("a",), ("b",), ("c",)])
            # Within a retention_interval or two of their deaths, the worker trims the
            # two oldest.
            with anyio.fail_after(20):
                await trimmed.wait()
            names = await dead_names(app)
        data = reader.get_metrics_data()
    finally:
        provider.shutdown()
    assert names == ["c"]
    assert removed_by_worker == 2
    assert f"dead letter(s) of queue {q}, beyond dead_max (1)" in caplog.text
    assert data is not None
    removed = [
        (dict(point.attributes or {}), getattr(point, "value", None))
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == "asyncq.dead_letters.removed"
        for point in metric.data.data_points
    ]
    assert removed == [({"queue": q, "reason": "max"}, 2)]
