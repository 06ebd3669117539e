"""RabbitMQ alone: an ``amqp://`` URL without ``records=``. That workers run, retry, delay,
dead-letter and purge jobs there, and that queue stats count from RabbitMQ's queues, the
contract suite shows (its ``amqp-no-records`` backend); here, ``asyncq dlq`` and ``asyncq
stats`` work through the CLI, and what needs a record store (results, status, cancellation,
idempotency keys, the list of workers) raises a one-line ``ConfigurationError`` that says to
add ``records=``."""

from __future__ import annotations

import json
import sys

import anyio
import pytest
from harness import TESTS_DIR, Settled, worker_env

import asyncq
from asyncq import JobStatus
from asyncq.backend import Outcome

from .amqp_support import rabbitmq_only_url

pytestmark = pytest.mark.anyio

FAST_BACKOFF = asyncq.Backoff(base=0.01, cap=0.05)


def rabbitmq_only_app(prefix: str) -> asyncq.App:
    return asyncq.App(rabbitmq_only_url(prefix), backoff=FAST_BACKOFF, shutdown_timeout=2.0)


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
