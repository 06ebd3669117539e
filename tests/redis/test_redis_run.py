"""``asyncq run`` on Redis: the worker processes of a supervisor that is killed stop
gracefully, finishing or returning their jobs."""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Iterator
from functools import partial

import anyio
import pytest
from harness import Lines, exited, worker_process
from redis_support import claimed_prefix, redis_url

import asyncq
from asyncq import JobStatus

pytestmark = pytest.mark.anyio

SUPERVISED = re.compile(r"worker process \d+ started \(pid (\d+)\)")


@pytest.fixture
def url(unique: str) -> Iterator[str]:
    with claimed_prefix(unique) as prefix:
        yield redis_url(prefix)


def producer(url: str) -> tuple[asyncq.App, asyncq.Task[[float], None]]:
    """An App on ``url`` with the task of apps.supervised, to enqueue it and read its jobs."""
    app = asyncq.App(url)

    @app.task(name="supervised.nap")
    async def nap(seconds: float) -> None:
        raise AssertionError("the worker processes run it, not the test")

    return app, nap


async def test_worker_processes_stop_gracefully_when_their_supervisor_is_killed(url: str) -> None:
    shutdown_timeout = 2.0
    options = ["--processes", "2", "--concurrency", "1", "--shutdown-timeout", "2"]
    app, nap = producer(url)
    children: list[int] = []
    try:
        async with app, worker_process("apps.supervised:app", url, *options) as supervisor:
            stdout, stderr = Lines(supervisor.stdout), Lines(supervisor.stderr)
            serving = 0
            while serving < 2:  # the supervisor names each child before the child starts
                line = await stderr.expect(
                    lambda line: SUPERVISED.search(line) is not None or " started: queues=" in line,
                    timeout=30,
                )
                if found := SUPERVISED.search(line):
                    children.append(int(found.group(1)))
                else:
                    serving += 1
            # One job per worker process (each takes one at a time): one that ends well
            # within the shutdown timeout, one that would run far beyond it.
            short, long = await nap.enqueue_many([(1.0,), (3600.0,)])
            running = {f"started {short.id}", f"started {long.id}"}
            while running:
                running.discard(await stdout.expect(lambda line: line in running, timeout=30))

            killed_at = time.monotonic()
            supervisor.kill()
            with anyio.fail_after(10):
                assert await supervisor.wait() == -signal.SIGKILL
            # Its output ends when the last worker process holding it exits.
            async with anyio.create_task_group() as tg:
                for lines in (stdout, stderr):
                    tg.start_soon(partial(lines.rest, timeout=shutdown_timeout + 5))
            ended = time.monotonic() - killed_at
            with anyio.fail_after(5):
                for pid in children:
                    await exited(pid)
            gone = time.monotonic() - killed_at
            print(
                f"supervisor SIGKILLed: output ended after {ended:.2f} s, workers gone {gone:.2f} s"
            )

            assert await short.status() is JobStatus.SUCCEEDED
            info = await long.info()
            assert info.status is JobStatus.QUEUED  # returned, not lost
            assert info.attempt == 1  # and without spending a retry
    finally:
        for pid in children:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    runs = [line for line in stdout.seen if line.startswith(("started ", "finished "))]
    assert sorted(runs) == sorted(
        [f"started {short.id}", f"finished {short.id}", f"started {long.id}"]
    )
    log = "\n".join(stderr.seen)
    assert log.count("the supervisor has exited") == 2, log
    assert "Traceback" not in log, log
