"""Metrics: what a worker records through an OpenTelemetry MeterProvider, on every backend:
jobs by outcome, durations, queue wait, in-flight jobs, its queues' depths, and the last
slot of each schedule."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import anyio
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

import asyncq
from asyncq.backend import Outcome
from asyncq.periodic import fire
from asyncq.records import QueueStats, ScheduleState
from asyncq.testing import Recorded, SettleLog

pytestmark = pytest.mark.anyio


class Meters:
    """An SDK MeterProvider of one test's own, and a reader that collects on demand."""

    def __init__(self) -> None:
        self.reader = InMemoryMetricReader()
        self.provider = MeterProvider(metric_readers=[self.reader])


@pytest.fixture
def meters() -> Iterator[Meters]:
    meters = Meters()
    yield meters
    meters.provider.shutdown()


def points(reader: InMemoryMetricReader) -> dict[str, list[tuple[dict[str, Any], Any]]]:
    """Every data point collected now, by metric name: (attributes, point)."""
    found: dict[str, list[tuple[dict[str, Any], Any]]] = {}
    data = reader.get_metrics_data()
    assert data is not None
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    found.setdefault(metric.name, []).append((dict(point.attributes or {}), point))
    return found


def value(found: dict[str, list[tuple[dict[str, Any], Any]]], name: str, **labels: str) -> Any:
    matching = [p for a, p in found.get(name, []) if labels.items() <= a.items()]
    assert len(matching) == 1, (name, labels, found.get(name))
    return matching[0]


class Polls:
    """Wakes a test each time the worker has read its queues' depths."""

    def __init__(self, app: asyncq.App, monkeypatch: pytest.MonkeyPatch) -> None:
        backend = app.backend
        read = backend.queue_stats
        self._done = anyio.Event()

        async def queue_stats(queues: Sequence[str] | None = None) -> list[QueueStats]:
            found = await read(queues)
            self._done.set()
            return found

        monkeypatch.setattr(backend, "queue_stats", queue_stats)

    async def next(self, *, timeout: float = 10.0) -> None:
        """Wait until a poll that starts after this call has finished."""
        with anyio.fail_after(timeout):
            self._done = anyio.Event()
            await self._done.wait()  # one that was under way may predate what we want seen
            self._done = anyio.Event()
            await self._done.wait()


async def test_outcomes_durations_waits_and_depths_are_recorded(
    app: asyncq.App,
    meters: Meters,
    monkeypatch: pytest.MonkeyPatch,
    settled: SettleLog,
    recorded: Recorded,
) -> None:
    polls = Polls(app, monkeypatch)

    @app.task(name="add")
    async def add(a: int, b: int) -> int:
        return a + b

    @app.task(name="broken", retries=1, backoff=asyncq.Backoff(base=0.01, jitter=False))
    async def broken() -> None:
        raise ValueError("no")

    holding = anyio.Event()
    release = anyio.Event()

    @app.task(name="hold")
    async def hold() -> None:
        holding.set()
        await release.wait()

    async with app:
        await add.options(delay=60).enqueue(1, 2)  # scheduled for the whole test
        async with app.worker(concurrency=4, meter_provider=meters.provider, metrics_interval=0.02):
            added = await add.enqueue(2, 3)
            assert await settled.wait(added.id, timeout=10) == [Outcome.SUCCEEDED]
            await recorded.result(added, 5)
            failing = await broken.enqueue()
            assert await settled.wait(failing.id, 2, timeout=10) == [Outcome.RETRY, Outcome.DEAD]
            await recorded.failed(failing)
            await hold.enqueue()
            with anyio.fail_after(10):
                await holding.wait()
            await polls.next()
            found = points(meters.reader)
            release.set()

    assert value(found, "asyncq.jobs", task="add", outcome="succeeded").value == 1
    assert value(found, "asyncq.jobs", task="broken", outcome="retried").value == 1
    assert value(found, "asyncq.jobs", task="broken", outcome="dead").value == 1
    took = value(found, "asyncq.job.duration", task="add", outcome="succeeded")
    assert took.count == 1 and 0 <= took.sum < 10
    waited = value(found, "asyncq.job.queue_wait", queue="default", task="broken")
    assert waited.count == 2 and waited.sum >= 0
    assert value(found, "asyncq.jobs.in_flight", queue="default").value == 1
    assert value(found, "queue_depth_scheduled", queue="default").value == 1
    assert value(found, "queue_depth_running", queue="default").value == 1
    assert value(found, "queue_depth_pending", queue="default").value == 0
    assert value(found, "queue_dlq_depth", queue="default").value == 1
    if app.backend.measures_lag:  # nothing pending: no lag
        assert value(found, "queue_oldest_pending_age_seconds", queue="default").value == 0
    else:  # no series, rather than a 0 that would read as "no lag"
        assert "queue_oldest_pending_age_seconds" not in found


async def test_no_meter_provider_means_no_instruments(
    app: asyncq.App, settled: SettleLog, recorded: Recorded
) -> None:
    # The global provider is the API's proxy until an SDK sets one: the worker leaves it be.
    @app.task
    async def add(a: int, b: int) -> int:
        return a + b

    async with app, app.worker(concurrency=1) as worker:
        job = await add.enqueue(1, 1)
        assert await settled.wait(job.id, timeout=10) == [Outcome.SUCCEEDED]
        await recorded.result(job, 2)
        assert worker.metrics is None


async def test_in_flight_reads_zero_for_every_served_queue_before_any_job(
    app: asyncq.App, meters: Meters
) -> None:
    @app.task(queue="emails")
    async def send() -> None:
        pass

    async with (
        app,
        app.worker(concurrency=2, queues=["default", "emails"], meter_provider=meters.provider),
    ):
        found = points(meters.reader)
    assert value(found, "asyncq.jobs.in_flight", queue="default").value == 0
    assert value(found, "asyncq.jobs.in_flight", queue="emails").value == 0


@pytest.mark.needs_store
async def test_each_schedules_last_slot_is_a_gauge_labelled_with_its_jobs_status(
    app: asyncq.App, meters: Meters, settled: SettleLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    @app.periodic("0 3 * * *", name="nightly")
    async def nightly() -> None: ...

    store = app.backend.store
    read = store.schedule_state
    looks: list[anyio.Event] = []

    async def schedule_state(schedule: str) -> ScheduleState:
        for look in looks:
            look.set()
        return await read(schedule)

    monkeypatch.setattr(store, "schedule_state", schedule_state)
    slot = datetime(2026, 12, 2, 3, 0, tzinfo=UTC)
    async with app:
        assert await fire(app, app.schedules["nightly"], slot)
        job_id = (await read("nightly")).last_job
        assert job_id is not None
        async with app.worker(concurrency=1, meter_provider=meters.provider, metrics_interval=0.02):
            assert await settled.wait(job_id) == [Outcome.SUCCEEDED]
            # The metrics poll reads the schedule and then its job: a poll that begins after
            # the next one has begun has stored what it read after the job finished.
            first, second = anyio.Event(), anyio.Event()
            looks.append(first)
            with anyio.fail_after(10):
                await first.wait()
                looks.append(second)
                await second.wait()
            found = points(meters.reader)
    point = value(found, "asyncq.schedule.last_slot_timestamp_seconds", schedule="nightly")
    assert point.attributes == {"schedule": "nightly", "status": "succeeded"}
    assert point.value == slot.timestamp()
