"""At-least-once delivery, acknowledged late: a job is acknowledged only once its handler has
finished, so a job whose worker stops or vanishes mid-run is delivered again; a worker that
is alive renews its lease, so a long job is never taken from it and run twice."""

from __future__ import annotations

import time
from collections.abc import Sequence

import anyio
import pytest

import asyncq
from asyncq import JobStatus, current_job
from asyncq.backend import Outcome, Settlement
from asyncq.testing import Broker, Recorded, SettleLog

pytestmark = pytest.mark.anyio

VISIBILITY_TIMEOUT = 0.3
"""How long a delivery waits for its worker's lease renewal here: a few tenths of a second,
so a lost consumer's job comes back within the test (where the backend has leases)."""


@pytest.fixture
def app(broker: Broker) -> asyncq.App:
    """This module's App: the suite's, with short leases."""
    return broker.app(visibility_timeout=VISIBILITY_TIMEOUT)


async def test_job_of_a_stopped_worker_runs_again_with_the_same_attempt(
    app: asyncq.App, settled: SettleLog, recorded: Recorded
) -> None:
    started = anyio.Event()
    runs: list[tuple[int, bool]] = []

    @app.task(retries=0)
    async def work() -> str:
        job = current_job()
        runs.append((job.attempt, job.redelivered))
        if len(runs) == 1:
            started.set()
            await anyio.sleep_forever()
        return "done"

    async with app:
        job = await work.enqueue()
        first = asyncq.Worker(app, concurrency=1, shutdown_timeout=0)
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                await tg.start(first.run)
                await started.wait()
                first.stop()
        # Not acknowledged: back in the queue, and the interrupted run spent no attempt
        # (with retries=0 a spent attempt would have made it dead).
        assert settled.outcomes.get(job.id) == [Outcome.RELEASE]
        assert (await app.queue_stats([app.default_queue]))[app.default_queue].pending == 1
        if info := await recorded.info(job):
            assert info.status is JobStatus.QUEUED
            assert info.attempt == 1
        async with app.worker(concurrency=1):
            assert await settled.wait(job.id, 2) == [Outcome.RELEASE, Outcome.SUCCEEDED]
            await recorded.result(job, "done")
    assert runs[0] == (1, False)
    assert [attempt for attempt, _ in runs] == [1, 1]
    if recorded.kept:
        # A shutdown is not a lost worker: the second delivery is not flagged redelivered.
        # Only the records tell the two apart; a broker alone may flag every delivery
        # that went out before (RabbitMQ does).
        assert runs == [(1, False), (1, False)]


async def test_job_of_a_lost_consumer_is_redelivered(
    broker: Broker, app: asyncq.App, settled: SettleLog, recorded: Recorded
) -> None:
    runs: list[tuple[int, bool]] = []

    @app.task
    async def work() -> str:
        job = current_job()
        runs.append((job.attempt, job.redelivered))
        return "done"

    async with app:
        job = await work.enqueue()
        # A consumer with its own connection takes the job, then its process dies: it
        # never settles or renews the delivery, and its connection goes away.
        consumer = broker.app(visibility_timeout=VISIBILITY_TIMEOUT)
        async with consumer:
            lost = await consumer.backend.fetch([app.default_queue], 1, timeout=5)
            assert [d.id for d in lost] == [job.id]
            await recorded.status(job, JobStatus.RUNNING)
        lost_at = time.monotonic()
        async with app.worker(concurrency=1):
            assert await settled.wait(job.id) == [Outcome.SUCCEEDED]
            waited = time.monotonic() - lost_at
            await recorded.result(job, "done")
    assert runs == [(1, True)]
    # Delivered again once the lease ran out (at once where the broker saw the loss).
    assert waited <= VISIBILITY_TIMEOUT + 1.0


async def test_long_job_on_a_healthy_worker_is_not_run_twice(
    app: asyncq.App, settled: SettleLog, recorded: Recorded
) -> None:
    runs: list[tuple[int, bool]] = []

    @app.task
    async def long_job() -> str:
        job = current_job()
        runs.append((job.attempt, job.redelivered))
        await anyio.sleep(VISIBILITY_TIMEOUT * 4)  # the work outlasts several leases
        return "done"

    async with app:
        job = await long_job.enqueue()
        # Two idle workers compete: had the lease lapsed, one of them would take the job.
        async with app.worker(concurrency=2), app.worker(concurrency=2):
            assert await settled.wait(job.id, timeout=10) == [Outcome.SUCCEEDED]
            await recorded.result(job, "done")
    assert runs == [(1, False)]


@pytest.mark.needs_leases
async def test_late_settlement_from_a_lost_consumer_does_not_undo_the_outcome(
    app: asyncq.App, settled: SettleLog, recorded: Recorded
) -> None:
    runs: list[bool] = []

    @app.task(retries=3)
    async def work() -> str:
        runs.append(current_job().redelivered)
        return "done"

    async with app:
        job = await work.enqueue()
        # A consumer takes the job and stalls (a long GC pause, a network partition)
        # past its lease, so the job goes to another worker.
        (lost,) = await app.backend.fetch([app.default_queue], 1, timeout=5)
        async with app.worker(concurrency=1):
            assert await settled.wait(job.id) == [Outcome.SUCCEEDED]
            # Then the stalled consumer wakes up and settles the delivery it held: the job
            # has finished since, so this must change nothing.
            await app.backend.settle(
                [
                    Settlement(
                        lost,
                        Outcome.RETRY,
                        retry_body=lost.body,
                        eta=time.time(),
                        error=asyncq.ErrorInfo("ValueError", "stale"),
                        task=work.name,
                    ),
                    Settlement(lost, Outcome.DEAD, error=asyncq.ErrorInfo("ValueError", "stale")),
                ]
            )
            # A job after it on the same queue: once it is done, a wrongly requeued
            # first job would have run too.
            after = await work.enqueue()
            assert await settled.wait(after.id) == [Outcome.SUCCEEDED]
        await recorded.status(job, JobStatus.SUCCEEDED)
        await recorded.result(job, "done", timeout=1)
        assert await app.dead_letters() == []
        stats = (await app.queue_stats([app.default_queue]))[app.default_queue]
        assert (stats.pending, stats.scheduled) == (0, 0)
    assert runs == [True, False]


@pytest.mark.needs_leases
async def test_finished_job_keeps_its_lease_until_its_settlement_lands(
    broker: Broker, app: asyncq.App, settled: SettleLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs: list[str] = []

    @app.task
    async def work() -> str:
        runs.append("first worker")
        return "done"

    other = broker.app(visibility_timeout=VISIBILITY_TIMEOUT)

    @other.task(name=work.name)
    async def work_elsewhere() -> str:
        runs.append("second worker")
        return "done"

    # The first worker's settlements fail for a while (as through an outage its other round
    # trips came through): its settler retries them with backoff, and the job it finished
    # is still its own, its lease renewed, until the settlement lands.
    real_settle = app.backend.settle
    refusing = True
    refused = anyio.Event()

    async def settle(settlements: Sequence[Settlement]) -> None:
        if refusing:
            refused.set()
            raise asyncq.BrokerUnavailable("this test refuses the settlement")
        await real_settle(settlements)

    monkeypatch.setattr(app.backend, "settle", settle)
    async with app, other:
        job = await work.enqueue()
        async with app.worker(concurrency=1):
            with anyio.fail_after(5):
                await refused.wait()
            # A second worker competes for the job for several leases' time: had the lease
            # lapsed, it would take the job and run it again.
            async with other.worker(concurrency=1):
                await anyio.sleep(VISIBILITY_TIMEOUT * 3)
                refusing = False
                assert await settled.wait(job.id, timeout=5) == [Outcome.SUCCEEDED]
    assert runs == ["first worker"]
