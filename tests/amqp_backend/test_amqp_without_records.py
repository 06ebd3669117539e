"""RabbitMQ alone: an ``amqp://`` URL without ``records=``. Workers run jobs, retry, delay
and dead-letter them, ``asyncq dlq`` works, and queue stats count from RabbitMQ's queues;
what needs a record store (results, status, cancellation, idempotency keys, the list of
workers) raises a one-line ``ConfigurationError`` that says to add ``records=``."""

from __future__ import annotations

import json
import sys

import anyio
import pytest
from harness import TESTS_DIR, Settled, worker_env

import asyncq
from asyncq import JobStatus, QueueStats, current_job
from asyncq.backend import Outcome

from .amqp_support import rabbitmq_only_url

pytestmark = pytest.mark.anyio

FAST_BACKOFF = asyncq.Backoff(base=0.01, cap=0.05)


def rabbitmq_only_app(prefix: str) -> asyncq.App:
    return asyncq.App(rabbitmq_only_url(prefix), backoff=FAST_BACKOFF, shutdown_timeout=2.0)


async def test_a_worker_runs_retries_delays_and_dead_letters_jobs_without_records(
    prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = rabbitmq_only_app(prefix)
    settled = Settled(monkeypatch, app.backend)
    assert not app.backend.store.available
    runs: list[tuple[str, int]] = []
    finished = {"plain": anyio.Event(), "flaky": anyio.Event(), "delayed": anyio.Event()}
    enqueued_at: dict[str, float] = {}
    ran_at: dict[str, float] = {}

    @app.task(retries=3)
    async def work(name: str) -> None:
        attempt = current_job().attempt
        runs.append((name, attempt))
        if name == "flaky" and attempt == 1:
            raise asyncq.Retry(delay=0.2)
        ran_at[name] = anyio.current_time()
        finished[name].set()

    @app.task(name="doomed", retries=1)
    async def doomed() -> None:
        raise ValueError("always")

    async with app:
        await work.enqueue("plain")
        await work.enqueue("flaky")
        enqueued_at["delayed"] = anyio.current_time()
        await work.options(delay=0.5).enqueue("delayed")
        dead = await doomed.enqueue()
        stats = (await app.queue_stats([app.default_queue]))[app.default_queue]
        assert (stats.pending, stats.scheduled) == (3, 1)  # the delayed job waits
        async with app.worker(concurrency=4):
            with anyio.fail_after(10):
                for event in finished.values():
                    await event.wait()
                await settled.outcome(dead.id, Outcome.DEAD)
        letters = await app.dead_letters()
        stats = (await app.queue_stats([app.default_queue]))[app.default_queue]
    assert sorted(runs) == [("delayed", 1), ("flaky", 1), ("flaky", 2), ("plain", 1)]
    assert ran_at["delayed"] - enqueued_at["delayed"] >= 0.5  # never early
    assert [(d.id, d.task, d.error.type) for d in letters] == [(dead.id, "doomed", "ValueError")]
    assert stats == QueueStats(app.default_queue, pending=0, scheduled=0, running=0, dead=1)


async def test_a_burst_worker_waits_for_pending_retries_and_delays(prefix: str) -> None:
    # Without records, the delayed jobs are counted in the queue's own wait queues.
    app = rabbitmq_only_app(prefix)
    done: list[str] = []

    @app.task(retries=2)
    async def work(name: str) -> None:
        if name == "flaky" and current_job().attempt == 1:
            raise asyncq.Retry(delay=0.4)
        done.append(name)

    async with app:
        await work.enqueue("plain")
        await work.enqueue("flaky")
        await work.options(delay=0.6).enqueue("delayed")
        with anyio.fail_after(10):
            await app.run_worker(concurrency=2, burst=True)
        stats = (await app.queue_stats([app.default_queue]))[app.default_queue]
    assert sorted(done) == ["delayed", "flaky", "plain"]
    assert stats == QueueStats(app.default_queue)


async def test_what_needs_records_raises_a_one_line_configuration_error(prefix: str) -> None:
    app = rabbitmq_only_app(prefix)

    @app.task
    async def add(a: int, b: int) -> int:
        return a + b

    async with app:
        job = await add.enqueue(1, 2)
        for call in (job.result(timeout=1), job.status(), job.info(), job.cancel()):
            with pytest.raises(asyncq.ConfigurationError) as caught:
                await call
            message = str(caught.value)
            assert "needs a job record store" in message, message
            assert "add records=redis://" in message and "\n" not in message, message
        # An idempotency key is refused before anything is sent.
        with pytest.raises(asyncq.ConfigurationError, match="idempotency key needs a job"):
            await add.options(key="order-42").enqueue(3, 4)
        with pytest.raises(asyncq.ConfigurationError, match="add records=redis://"):
            await app.backend.list_jobs(app.default_queue, JobStatus.RUNNING)
        stats = (await app.queue_stats([app.default_queue]))[app.default_queue]
    assert stats.pending == 1  # the first job only


async def cli(url: str, *args: str, code: int = 0) -> tuple[str, str]:
    argv = [sys.executable, "-m", "asyncq", *args, "apps.observed:app", "--broker", url]
    done = await anyio.run_process(argv, cwd=TESTS_DIR, env=worker_env(TESTS_DIR), check=False)
    stdout, stderr = done.stdout.decode(), done.stderr.decode()
    assert done.returncode == code, (stdout, stderr)
    return stdout, stderr


async def test_dlq_list_replay_and_purge_through_the_cli_without_records(
    prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = rabbitmq_only_url(prefix)
    app = asyncq.App(url)
    settled = Settled(monkeypatch, app.backend)

    @app.task(name="refuse")  # the task of apps.observed, which the CLI loads
    async def refuse() -> None:
        raise asyncq.Reject("refused on purpose")

    async with app:
        job = await refuse.enqueue()
        async with app.worker(concurrency=1):
            await settled.outcome(job.id, Outcome.DEAD, timeout=10)

    stdout, _ = await cli(url, "dlq", "list", "--json")
    listed = json.loads(stdout)
    assert [(d["id"], d["task"]) for d in listed] == [(job.id, "refuse")]
    assert listed[0]["error"]["message"] == "refused on purpose"
    stdout, _ = await cli(url, "dlq", "replay", "--id", job.id)
    assert stdout == "replayed 1 dead letter(s)\n"
    stdout, _ = await cli(url, "stats", "--json")
    stats = json.loads(stdout)["default"]
    assert (stats["pending"], stats["dead"], stats["workers"]) == (1, 0, None)  # unknown
    stdout, _ = await cli(url, "dlq", "list")
    assert stdout.startswith("no dead letters"), stdout
    # The list of workers needs the records: one line, exit code 2.
    _, stderr = await cli(url, "workers", code=2)
    assert stderr.startswith("error: listing workers needs a job record store"), stderr
    assert "add records=redis://" in stderr and stderr.count("\n") == 1, stderr


async def test_purge_drops_queued_and_delayed_jobs_without_records(prefix: str) -> None:
    app = rabbitmq_only_app(prefix)

    @app.task
    async def never() -> None:
        raise AssertionError("purged jobs never run")

    q = app.default_queue
    async with app:
        await never.enqueue_many([(), ()])
        await never.options(delay=60).enqueue()
        assert (await app.queue_stats([q]))[q] == QueueStats(q, pending=2, scheduled=1)
        assert await app.purge_queue(q) == 3
        assert (await app.queue_stats([q]))[q] == QueueStats(q)
        with anyio.fail_after(10):
            await app.run_worker(burst=True)  # nothing left to run
