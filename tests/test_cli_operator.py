"""The operator commands (enqueue, stats, workers, dlq, job, queue) run in this process
through click's CliRunner, on every backend: they read and change what the backend stores.
The app is tests/apps/inproc.py; each test points it at a broker of its own with
``--broker`` and runs burst workers on it in between the commands."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

import anyio
import pytest
import services
from apps import inproc
from click.testing import CliRunner, Result

import asyncq
from asyncq.cli import cli


# -- in-process, with CliRunner --------------------------------------------------------------
@pytest.fixture(params=services.BROKER_KINDS)
def broker_url(request: pytest.FixtureRequest, unique: str) -> Iterator[str]:
    """A broker of this test's own for the in-process app (the CLI's --broker points at it),
    on each backend: the operator commands read what the backend stores."""
    yield from _broker_url(request.param, unique)


@pytest.fixture(params=["redis", "amqp"])
def shared_broker_url(request: pytest.FixtureRequest, unique: str) -> Iterator[str]:
    """As ``broker_url``, on the brokers processes share (``--wait`` refuses memory://)."""
    yield from _broker_url(request.param, unique)


def _broker_url(kind: str, unique: str) -> Iterator[str]:
    services.require_broker(kind)
    url = services.broker_url(kind, unique)
    inproc.app.use_broker(url)
    yield url
    services.clean_broker(kind, unique)


def url_kind(url: str) -> str:
    return url.split(":", 1)[0]


EMPTY = {"pending": 0, "scheduled": 0, "running": 0, "dead": 0, "workers": 0}
"""What ``asyncq stats --json`` says of a queue with nothing in it."""


def invoke(url: str, command: str, *args: str, stdin: str | None = None, code: int = 0) -> Result:
    """Run ``asyncq COMMAND apps.inproc:app ARGS --broker URL``; check its exit code."""
    full = [*command.split(), "apps.inproc:app", *args, "--broker", url]
    result = CliRunner().invoke(cli, full, input=stdin)
    assert result.exit_code == code, (result.output, result.exception)
    return result


@contextmanager
def heartbeating(url: str, *workers: asyncq.WorkerInfo) -> Iterator[None]:
    """Workers that have beaten, from a connection of their own that stays open for the
    block (on RabbitMQ a worker counts as live only while its connection is open)."""
    beaten, done = threading.Event(), threading.Event()

    async def beat() -> None:
        app = asyncq.App(url)
        async with app:
            for worker in workers:
                await app.backend.store.heartbeat(worker, ttl=60.0)
            beaten.set()
            await anyio.to_thread.run_sync(done.wait)

    thread = threading.Thread(target=anyio.run, args=(beat,))
    thread.start()
    try:
        assert beaten.wait(30), "the heartbeats were not sent"
        yield
    finally:
        done.set()
        thread.join(30)


def run_burst_worker() -> None:
    anyio.run(partial(inproc.app.run_worker, burst=True), backend="asyncio")


def job_info(job_id: str) -> asyncq.JobInfo:
    async def fetch() -> asyncq.JobInfo:
        async with inproc.app:
            return await inproc.app.get_job(job_id).info()

    return anyio.run(fetch, backend="asyncio")


def stats(url: str) -> dict[str, Any]:
    """``asyncq stats --json``, each queue's lag checked and left out (it is a time)."""
    data: dict[str, Any] = json.loads(invoke(url, "stats", "--json").stdout)
    for counts in data.values():
        lag = counts.pop("oldest_pending_age")
        assert lag is None or (isinstance(lag, int | float) and lag >= 0), lag
    return data


def test_enqueue_then_a_worker_runs_it(broker_url: str) -> None:
    job_id = invoke(broker_url, "enqueue", "add", "--args", "[1]", "--kwargs", '{"b": 2}').stdout
    job_id = job_id.strip()
    assert job_info(job_id).status is asyncq.JobStatus.QUEUED
    run_burst_worker()
    info = job_info(job_id)
    assert info.status is asyncq.JobStatus.SUCCEEDED
    assert info.task == "add"


def test_enqueue_wait_prints_the_json_result(shared_broker_url: str) -> None:
    broker_url = shared_broker_url
    first = invoke(broker_url, "enqueue", "add", "--args", "[20, 22]", "--key", "answer")
    run_burst_worker()
    # The key names the job that already succeeded: --wait returns its result at once.
    again = invoke(broker_url, "enqueue", "add", "--args", "[20, 22]", "--key", "answer", "--wait")
    job_id, result = again.stdout.splitlines()
    assert job_id == first.stdout.strip()
    assert json.loads(result) == 42


def test_enqueue_wait_times_out_with_exit_1(shared_broker_url: str) -> None:
    broker_url = shared_broker_url
    result = invoke(
        broker_url, "enqueue", "add", "--args", "[1, 2]", "--wait", "--timeout", "0.2", code=1
    )
    job_id = result.stdout.strip()
    assert result.stderr == f"error: job {job_id} did not finish within 0.2 s; it is queued\n"


def test_stats_json_counts_pending_scheduled_and_dead(broker_url: str) -> None:
    invoke(broker_url, "enqueue", "always_fails", "--args", '["boom"]')
    run_burst_worker()
    invoke(broker_url, "enqueue", "add", "--args", "[1, 2]")
    invoke(broker_url, "enqueue", "add", "--args", "[3, 4]", "--delay", "3600")
    counts = {"pending": 1, "scheduled": 1, "running": 0, "dead": 1, "workers": 0}
    assert stats(broker_url) == {"default": counts}
    shown = invoke(broker_url, "stats")
    table = shown.stdout.splitlines()
    row = table[1].split()
    assert row[5] == ("-" if url_kind(broker_url) == "amqp" else "0s")  # the lag: just sent
    assert row[:5] + row[6:] == [
        "default",
        "1",
        "1",
        "0",
        "1",
        "0",
        "pending,",
        "no",
        "live",
        "worker",
    ]
    assert "warning: default has 1 pending job(s) and no live worker serving it" in shown.stderr


def test_dlq_list_replay_and_purge(broker_url: str) -> None:
    job_id = invoke(broker_url, "enqueue", "always_fails", "--args", '["boom"]').stdout.strip()
    run_burst_worker()
    assert inproc.attempts[job_id] == [1, 2]

    listed = json.loads(invoke(broker_url, "dlq list", "--json").stdout)
    assert [(d["id"], d["task"], d["attempt"], d["args"]) for d in listed] == [
        (job_id, "always_fails", 2, ["boom"])
    ]
    assert (listed[0]["error"]["type"], listed[0]["error"]["message"]) == ("ValueError", "boom")
    table = invoke(broker_url, "dlq list").stdout
    assert job_id in table and "ValueError: boom" in table

    replayed = invoke(broker_url, "dlq replay", "--id", job_id)
    assert replayed.stdout == "replayed 1 dead letter(s)\n"
    info = job_info(job_id)
    assert (info.status, info.attempt) == (asyncq.JobStatus.QUEUED, 1)
    assert stats(broker_url)["default"]["dead"] == 0
    run_burst_worker()
    assert inproc.attempts[job_id] == [1, 2, 1, 2]  # a fresh retry budget

    declined = invoke(broker_url, "dlq purge", stdin="n\n", code=1)
    assert "Permanently delete 1 dead letter(s) from default?" in declined.stdout
    assert "error: not confirmed; nothing was purged" in declined.stderr
    assert stats(broker_url)["default"]["dead"] == 1
    purged = invoke(broker_url, "dlq purge", "--yes")
    assert purged.stdout == "purged 1 dead letter(s)\n"
    assert json.loads(invoke(broker_url, "dlq list", "--json").stdout) == []


def test_dlq_filters_by_task_and_id(broker_url: str) -> None:
    ids = [
        invoke(broker_url, "enqueue", "always_fails", "--args", f'["{n}"]').stdout.strip()
        for n in range(3)
    ]
    run_burst_worker()
    assert invoke(broker_url, "dlq list", "--task", "add").stdout.startswith("no dead letters")
    listed = json.loads(invoke(broker_url, "dlq list", "--json", "--limit", "2").stdout)
    assert len(listed) == 2 and {d["id"] for d in listed} < set(ids)

    purged = invoke(broker_url, "dlq purge", "--id", ids[0], "--id", "not-a-job", stdin="y\n")
    assert "Permanently delete 1 dead letter(s)" in purged.stdout
    assert purged.stdout.endswith("purged 1 dead letter(s)\n")
    assert "1 of the given ids are not dead letters here" in purged.stderr
    replayed = invoke(broker_url, "dlq replay", "--task", "always_fails", "--queue", "default")
    assert replayed.stdout == "replayed 2 dead letter(s)\n"
    assert stats(broker_url)["default"] == {**EMPTY, "pending": 2}


def test_dlq_filters_by_age(broker_url: str) -> None:
    ids = [
        invoke(broker_url, "enqueue", "always_fails", "--args", f'["{n}"]').stdout.strip()
        for n in range(3)
    ]
    run_burst_worker()
    # They all died moments ago: none is older than an hour, all are newer than one.
    older = ["--older-than", "1h"]
    assert json.loads(invoke(broker_url, "dlq list", "--json", *older).stdout) == []
    assert invoke(broker_url, "dlq purge", "--yes", *older).stdout == "purged 0 dead letter(s)\n"
    assert invoke(broker_url, "dlq purge", *older).stdout.startswith("no dead letters match")
    assert invoke(broker_url, "dlq replay", *older).stdout == "replayed 0 dead letter(s)\n"
    newer = json.loads(invoke(broker_url, "dlq list", "--json", "--newer-than", "3600").stdout)
    assert sorted(d["id"] for d in newer) == sorted(ids)
    purged = invoke(broker_url, "dlq purge", "--newer-than", "60m", "--id", ids[0], stdin="y\n")
    assert "Permanently delete 1 dead letter(s)" in purged.stdout
    replayed = invoke(broker_url, "dlq replay", "--newer-than", "1d", "--task", "always_fails")
    assert replayed.stdout == "replayed 2 dead letter(s)\n"
    assert stats(broker_url)["default"] == {**EMPTY, "pending": 2}

    bad = invoke(broker_url, "dlq list", "--older-than", "soon", code=2)
    assert "'soon' is not an age such as 90, 30s, 15m, 2h or 7d" in bad.output


def test_workers_lists_live_heartbeats_then_gone_ones(broker_url: str) -> None:
    info = asyncq.WorkerInfo(
        id="host:1:abcd", host="host", pid=1, queues=("default",), concurrency=5, in_flight=2
    )
    silent = asyncq.WorkerInfo(
        id="host:2:dead", host="host", pid=2, queues=("emails",), concurrency=1
    )
    stopped = asyncq.WorkerInfo(id="host:3:stop", host="host", pid=3, queues=(), concurrency=1)

    async def beat() -> None:
        async with inproc.app:
            backend = inproc.app.backend
            await backend.store.heartbeat(stopped, ttl=0.001)
            await backend.store.deregister(stopped.id)  # a clean stop: never listed as gone
            await backend.store.heartbeat(silent, ttl=0.001)
            await anyio.sleep(0.01)  # what is under test is a TTL running out: time itself

    anyio.run(beat, backend="asyncio")
    with heartbeating(broker_url, info):
        listed = json.loads(invoke(broker_url, "workers", "--json").stdout)
        shown = invoke(broker_url, "workers")
        print("DEBUG", listed, shown.stdout, shown.stderr)
        live = json.loads(invoke(broker_url, "workers", "--live", "--json").stdout)
    assert [
        (w["id"], w["queues"], w["concurrency"], w["in_flight"], w["gone"]) for w in listed
    ] == [
        ("host:1:abcd", ["default"], 5, 2, False),
        ("host:2:dead", ["emails"], 1, 0, True),
    ]
    table = shown.stdout.splitlines()
    assert table[0].split()[:3] == ["WORKER", "STATE", "QUEUES"]
    assert table[1].split()[:5] == ["host:1:abcd", "live", "default", "5", "2"]
    assert table[2].split()[:3] == ["host:2:dead", "gone", "emails"]
    assert "1 live, 1 gone" in shown.stderr
    assert [w["id"] for w in live] == ["host:1:abcd"]


def test_stats_counts_the_live_workers_serving_each_queue(broker_url: str) -> None:
    invoke(broker_url, "enqueue", "add", "--args", "[1, 2]")
    serving = asyncq.WorkerInfo(
        id="host:9:beef", host="host", pid=9, queues=("default",), concurrency=1
    )

    with heartbeating(broker_url, serving):
        shown = invoke(broker_url, "stats")
        counted = stats(broker_url)
    row = shown.stdout.splitlines()[1].split()
    assert row[:5] + row[6:] == ["default", "1", "0", "0", "0", "1"]
    assert "no live worker" not in shown.stderr
    assert counted == {"default": {**EMPTY, "pending": 1, "workers": 1}}


def test_job_show_result_and_cancel(broker_url: str) -> None:
    done = invoke(broker_url, "enqueue", "add", "--args", "[20, 22]").stdout.strip()
    failing = invoke(broker_url, "enqueue", "always_fails", "--args", '["boom"]').stdout.strip()
    pending = invoke(broker_url, "job result", done, code=1)
    assert f"job {done} has not finished: it is queued (--wait waits for it)" in pending.stderr
    run_burst_worker()
    waiting = invoke(broker_url, "enqueue", "add", "--args", "[1, 1]", "--delay", "3600")
    waiting_id = waiting.stdout.strip()

    shown = invoke(broker_url, "job show", done).stdout
    assert f"id       {done}" in shown and "status   succeeded" in shown
    assert "result   42" in shown
    data = json.loads(invoke(broker_url, "job show", done, "--json").stdout)
    assert (data["status"], data["result"], data["task"]) == ("succeeded", 42, "add")
    assert invoke(broker_url, "job result", done, "--queue", "default").stdout == "42\n"

    dead = json.loads(invoke(broker_url, "job show", failing, "--json").stdout)
    assert dead["status"] == "dead" and dead["error"]["type"] == "ValueError"
    assert "Traceback" in dead["error"]["traceback"]
    text = invoke(broker_url, "job show", failing).stdout
    assert "error    ValueError: boom" in text and "traceback:" in text
    assert "ValueError: boom" in invoke(broker_url, "job result", failing, code=1).stderr

    scheduled = invoke(broker_url, "job show", waiting_id).stdout
    assert "status   scheduled" in scheduled and "runs at" in scheduled
    cancelled = invoke(broker_url, "job cancel", waiting_id)
    assert cancelled.stdout == f"job {waiting_id} cancelled; it was scheduled\n"
    again = invoke(broker_url, "job cancel", waiting_id, code=1)
    assert "had already finished (cancelled); nothing to do" in again.stderr
    assert "was cancelled" in invoke(broker_url, "job result", waiting_id, code=1).stderr

    missing = invoke(broker_url, "job show", "0" * 32, code=1)
    assert f"no job {'0' * 32} in any of default" in missing.stderr
    elsewhere = invoke(broker_url, "job show", done, "--queue", "other", code=1)
    assert "in queue other" in elsewhere.stderr


def test_queue_purge_asks_then_cancels_the_waiting_jobs(broker_url: str) -> None:
    ids = [
        invoke(broker_url, "enqueue", "add", "--args", f"[{n}, 1]").stdout.strip() for n in range(3)
    ]
    invoke(broker_url, "enqueue", "add", "--args", "[9, 9]", "--delay", "3600")
    declined = invoke(broker_url, "queue purge", "default", stdin="n\n", code=1)
    assert "Cancel the 4 job(s) waiting in default? They will not run." in declined.stdout
    assert "error: not confirmed; nothing was purged" in declined.stderr
    assert stats(broker_url)["default"] == {**EMPTY, "pending": 3, "scheduled": 1}
    purged = invoke(broker_url, "queue purge", "default", "--yes")
    assert purged.stdout == "purged 4 job(s) from default\n"
    assert stats(broker_url)["default"] == EMPTY
    assert all(job_info(i).status is asyncq.JobStatus.CANCELLED for i in ids)
    assert invoke(broker_url, "queue purge", "default").stdout == "no jobs waiting in default\n"


def test_queue_remove_refuses_a_queue_in_use_and_removes_an_unused_one(broker_url: str) -> None:
    invoke(broker_url, "enqueue", "add", "--args", "[1, 2]", "--queue", "spare")
    busy = invoke(broker_url, "queue remove", "spare", "--yes", code=1)
    assert "queue 'spare' is not empty (1 pending); nothing was removed" in busy.stderr
    invoke(broker_url, "queue purge", "spare", "--yes")
    assert invoke(broker_url, "queue remove", "spare", stdin="y\n").stdout.endswith(
        "removed queue spare\n"
    )
    assert "spare" not in stats(broker_url)
    unknown = invoke(broker_url, "queue remove", "nope", "--yes", code=2)
    assert "no queue named 'nope'" in unknown.stderr


def test_enqueue_at_a_time(broker_url: str) -> None:
    at = "2099-01-01T00:00:00+00:00"
    job_id = invoke(broker_url, "enqueue", "add", "--args", "[1, 2]", "--at", at).stdout.strip()
    info = job_info(job_id)
    assert info.status is asyncq.JobStatus.SCHEDULED
    assert info.eta == 4070908800.0
    epoch = invoke(broker_url, "enqueue", "add", "--args", "[1, 2]", "--at", "4070908800")
    assert job_info(epoch.stdout.strip()).eta == 4070908800.0
    naive = invoke(broker_url, "enqueue", "add", "--at", "2099-01-01T00:00:00", code=2)
    assert "has no time zone" in naive.stderr
    both = invoke(broker_url, "enqueue", "add", "--at", at, "--delay", "5", code=2)
    assert "give --delay or --at, not both" in both.stderr
    bad = invoke(broker_url, "enqueue", "add", "--at", "tomorrow", code=2)
    assert "neither an ISO 8601 time" in bad.stderr


def test_dlq_with_a_task_the_app_does_not_have(broker_url: str) -> None:
    refused = invoke(broker_url, "dlq replay", "--task", "nope", code=2)
    assert "no task named 'nope' (known tasks: add, always_fails)" in refused.stderr
    assert "asyncq dlq purge apps.inproc:app --task nope" in refused.stderr
    listed = invoke(broker_url, "dlq list", "--task", "nope")
    assert "note: the app has no task named 'nope'" in listed.stderr
    assert listed.stdout == "no dead letters in any queue\n"
