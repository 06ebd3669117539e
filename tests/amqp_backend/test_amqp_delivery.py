"""Delivery on RabbitMQ: the job of a worker killed with SIGKILL mid-run goes to another
worker the moment the dead worker's connection closes (no visibility timeout to wait
for), flagged as redelivered, and runs exactly twice in all, with its records in Redis or
in PostgreSQL; a consumer that stops hands back what it prefetched at once."""

from __future__ import annotations

import time
from pathlib import Path

import anyio
import pytest
from harness import Lines, worker_process

import asyncq
from asyncq import JobStatus, current_job
from asyncq.backend import Delivery, Settlement

from .amqp_support import amqp_url, rabbitmq_only_url

pytestmark = pytest.mark.anyio


async def test_job_of_a_sigkilled_worker_is_redelivered_at_once_to_a_running_worker(
    records_url: str, tmp_path: Path
) -> None:
    url = records_url
    app = asyncq.App(url, shutdown_timeout=2.0)
    runs: list[tuple[str, int, bool]] = []
    probes: list[str] = []
    restarted = anyio.Event()
    restarted_at = 0.0

    @app.task(name="lost.work")  # the same task as the subprocess's apps.lost_worker
    async def work() -> str:
        nonlocal restarted_at
        restarted_at = time.monotonic()
        job = current_job()
        runs.append((job.id, job.attempt, job.redelivered))
        restarted.set()
        return "completed"

    @app.task(name="probe")
    async def probe() -> None:
        probes.append(current_job().id)

    async with app:
        job = await work.enqueue()
        # One slot and no prefetch: RabbitMQ hands the subprocess this one job, nothing more.
        options = ("--concurrency", "1", "--prefetch", "0")
        with (tmp_path / "worker.log").open("wb") as log:
            async with worker_process("apps.lost_worker:app", url, *options, stderr=log) as process:
                stdout = Lines(process.stdout)
                started = await stdout.expect(lambda line: line.startswith("started "), timeout=30)
                assert started == f"started {job.id} attempt=1 redelivered=False"
                assert await job.status() is JobStatus.RUNNING
                async with app.worker(concurrency=1, prefetch=0):
                    # This worker consumes from the same queue before the kill: a probe job
                    # (the subprocess has no slot for it) runs here.
                    probe_job = await probe.enqueue()
                    await probe_job.result(timeout=10)
                    assert probes == [probe_job.id]
                    assert runs == []  # the lost job is still the subprocess's
                    killed_at = time.monotonic()
                    process.kill()  # SIGKILL: nothing settled, nothing released
                    with anyio.fail_after(10):
                        assert await process.wait() == -9
                    # RabbitMQ requeues the dead connection's unacknowledged delivery when
                    # the connection closes; the running worker takes it at once.
                    with anyio.fail_after(10):
                        await restarted.wait()
                    assert await job.result(timeout=10) == "completed"
                    stats = (await app.queue_stats())["default"]
        assert await job.status() is JobStatus.SUCCEEDED
        assert await app.dead_letters() == []
    worker_log = (tmp_path / "worker.log").read_text()
    assert "Traceback" not in worker_log, worker_log
    delay = restarted_at - killed_at
    print(f"SIGKILLed worker's job started again {delay * 1000:.0f} ms after the kill")
    # Exactly twice in all: once in the killed worker (its one "started" line) and once
    # here, on the same attempt, flagged as the redelivery of a lost worker's job.
    assert [line for line in stdout.seen if line.startswith("started ")] == [started]
    assert runs == [(job.id, 1, True)]
    assert (stats.pending, stats.scheduled, stats.running, stats.dead) == (0, 0, 0, 0)
    assert delay <= 2.0, f"redelivered {delay:.2f} s after the kill"


@pytest.mark.parametrize("records", [True, False], ids=["records", "rabbitmq-only"])
async def test_stop_consuming_hands_back_the_prefetched_jobs_and_keeps_the_fetched_ones(
    prefix: str, records: bool
) -> None:
    url = amqp_url(prefix) if records else rabbitmq_only_url(prefix)
    stopping, other = asyncq.App(url), asyncq.App(url)

    @stopping.task(name="work")
    async def work() -> None:
        pass

    q = stopping.default_queue
    async with stopping, other:
        # A window of 6 on an empty queue, then six jobs: RabbitMQ pushes them all to this
        # process, which fetches two.
        assert await stopping.backend.fetch([q], 6, timeout=0) == []
        await work.enqueue_many([()] * 6)
        fetched: list[Delivery] = []
        with anyio.fail_after(10):
            while len(fetched) < 2:
                fetched += await stopping.backend.fetch([q], 2 - len(fetched), timeout=5)
        await stopping.backend.stop_consuming()
        # The four prefetched ones are back in the queue, for the other App's consumer ...
        taken: list[Delivery] = []
        with anyio.fail_after(10):
            while len(taken) < 4:
                taken += await other.backend.fetch([q], 4 - len(taken), timeout=5)
        assert {d.id for d in taken}.isdisjoint(d.id for d in fetched)
        # ... and the two fetched ones are still the stopped consumer's, to settle as usual.
        for backend, deliveries in ((stopping.backend, fetched), (other.backend, taken)):
            await backend.settle(
                [Settlement.succeeded(d, task="work", attempt=1, result=None) for d in deliveries]
            )
        assert (await other.queue_stats([q]))[q] == asyncq.QueueStats(q)
