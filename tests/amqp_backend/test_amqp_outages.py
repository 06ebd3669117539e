"""RabbitMQ going away under a busy worker (``rabbitmqctl stop_app``, then ``start_app``):
the worker reconnects by itself, every job completes (at least once), none is lost, and
jobs that finished while the broker was down are not lost either."""

from __future__ import annotations

import time

import aio_pika
import anyio
import pytest
import services
from harness import Runs, Settled, statuses

import asyncq
from asyncq import JobStatus, current_job

from .amqp_support import amqp_url, rabbitmqctl, require_rabbitmqctl

pytestmark = pytest.mark.anyio

JOBS = 5_000
HOLD_FROM = 1_000
"""Jobs from this number on wait, once started, until the broker is down: so the outage
always hits while most of the jobs are still to run, however fast the machine."""
CONCURRENCY = 50


async def wait_until_rabbitmq_answers(*, timeout: float) -> float:
    """Poll until a client can connect again (bounded); the seconds it took."""
    began = time.monotonic()
    with anyio.fail_after(timeout):
        while True:
            try:
                connection = await aio_pika.connect(services.AMQP_URL, timeout=2)
            except (aio_pika.exceptions.AMQPError, ConnectionError, OSError, TimeoutError):
                await anyio.sleep(0.2)  # polling a port until it opens: nothing to wait on
                continue
            await connection.close()
            return time.monotonic() - began


@pytest.mark.slow
async def test_every_job_completes_across_a_rabbitmq_stop_app_and_start_app(
    prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_rabbitmqctl()
    app = asyncq.App(amqp_url(prefix), shutdown_timeout=5.0)
    runs = Runs()
    holding = Runs()
    broker_down = anyio.Event()

    @app.task
    async def work(n: int) -> int:
        runs.record(current_job().id)
        if n >= HOLD_FROM and not broker_down.is_set():
            holding.record(current_job().id)
            await broker_down.wait()
        return n

    settled = Settled(monkeypatch, app.backend)
    async with app:
        # Everything is enqueued before the outage: a producer during it would rightly get
        # BrokerUnavailable, which is not what this test is about.
        jobs = await work.enqueue_many([(n,) for n in range(JOBS)])
        ids = [job.id for job in jobs]
        async with app.worker(concurrency=CONCURRENCY):
            # Every slot holds a job that waits for the outage.
            await holding.reached(CONCURRENCY, timeout=30)
            runs_at_stop = runs.total
            try:
                stopping_at = time.monotonic()
                await rabbitmqctl("stop_app")
                stopped_in = time.monotonic() - stopping_at
                # The held jobs finish while the broker is down: their acks cannot be sent,
                # their messages go back to the queue, and their success must still count.
                broker_down.set()
                held = set(holding.by_job)
                await settled.wait_until(lambda: held <= settled.succeeded, timeout=10)
                settled_while_down = len(settled.succeeded)
            finally:
                with anyio.CancelScope(shield=True):
                    broker_down.set()
                    await rabbitmqctl("start_app")
                    back_in = await wait_until_rabbitmq_answers(timeout=60)
            await settled.all_succeeded(ids, timeout=40)
            # The producer works again once the broker is back.
            after = await work.enqueue(JOBS)
            assert await after.result(timeout=10) == JOBS
        found = await statuses(app, jobs)
        stats = (await app.queue_stats())["default"]
    ran = set(runs.by_job)
    print(
        f"{JOBS} jobs, RabbitMQ stop_app ({stopped_in:.2f} s) and start_app (answering "
        f"again {back_in:.2f} s later) after {runs_at_stop} runs: {runs.total} runs, "
        f"{runs.duplicates} duplicate(s)"
    )
    assert runs_at_stop < JOBS - 2 * CONCURRENCY  # most jobs ran after the restart
    assert settled_while_down < JOBS - CONCURRENCY
    assert ran >= set(ids), f"{len(set(ids) - ran)} job(s) never ran"  # every job ran ...
    # ... and succeeded: none lost (duplicates are allowed: delivery is at least once).
    assert found == {JobStatus.SUCCEEDED: JOBS}, f"{found}; {runs.duplicates} duplicate(s)"
    assert (stats.pending, stats.scheduled, stats.running, stats.dead) == (0, 0, 0, 0), (
        f"{stats}; {runs.duplicates} duplicate(s)"
    )
