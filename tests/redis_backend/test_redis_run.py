"""``asyncq run`` on Redis: the worker processes of a supervisor that is killed stop
gracefully, finishing or returning their jobs; ``--wait-for-broker`` keeps a worker trying
a broker that is not there yet, and gives up after its time."""

from __future__ import annotations

import os
import re
import signal
import time
from functools import partial
from pathlib import Path

import anyio
import pytest
import services
from harness import Lines, exited, worker_process

import asyncq
from asyncq import JobStatus

from .redis_support import PrivateRedis, free_port, redis_url

pytestmark = pytest.mark.anyio

SUPERVISED = re.compile(r"worker process \d+ started \(pid (\d+)\)")
ATTEMPT = re.compile(r"broker unreachable \(attempt (\d+)\)")


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


async def test_wait_for_broker_logs_each_attempt_then_gives_up_in_one_line(unique: str) -> None:
    wait = 4.0  # a Redis connect retries for about 2.5 s before it fails: two attempts
    url = redis_url(unique, port=free_port())  # a port nothing listens on
    started = time.monotonic()
    async with worker_process("apps.supervised:app", url, "--wait-for-broker", "4") as process:
        lines = await Lines(process.stderr).rest(timeout=wait + 20)
        with anyio.fail_after(5):
            code = await process.wait()
    took = time.monotonic() - started
    print(f"--wait-for-broker {wait:g}: gave up after {took:.2f} s")
    assert code == 1, lines
    attempts = [int(found.group(1)) for line in lines if (found := ATTEMPT.search(line))]
    assert attempts == list(range(1, len(attempts) + 1)) and attempts, lines
    assert [line for line in lines if line.startswith("error:")] == [lines[-1]], lines
    given_up = f"still unreachable after {len(attempts) + 1} attempt(s) over {wait:g} s: Redis"
    assert lines[-1].startswith(f"error: cannot reach the broker: {given_up}"), lines
    assert "Traceback" not in "\n".join(lines)
    assert wait <= took < wait + 10


async def test_a_worker_waiting_for_its_broker_stops_at_once_on_sigterm(unique: str) -> None:
    url = redis_url(unique, port=free_port())  # a port nothing listens on
    async with worker_process("apps.supervised:app", url, "--wait-for-broker", "60") as process:
        stderr = Lines(process.stderr)
        await stderr.expect(lambda line: ATTEMPT.search(line) is not None, timeout=30)
        process.terminate()
        # Nothing had started, so nothing is left to finish.
        with anyio.fail_after(5):
            assert await process.wait() == 0
        lines = await stderr.rest(timeout=5)
    assert not [line for line in lines if line.startswith("error:")], lines
    assert "Traceback" not in "\n".join(stderr.seen)


async def test_worker_processes_started_before_their_broker_wait_for_it(
    unique: str, tmp_path: Path
) -> None:
    server = PrivateRedis(services.require_redis_server(), tmp_path)
    url = f"{server.url}?prefix={unique}"
    app, nap = producer(url)
    options = ["--processes", "2", "--wait-for-broker", "20"]
    stderr: Lines | None = None
    try:
        async with worker_process("apps.supervised:app", url, *options) as supervisor:
            stdout, stderr = Lines(supervisor.stdout), Lines(supervisor.stderr)
            await stderr.expect(lambda line: ATTEMPT.search(line) is not None, timeout=30)
            await server.start()
            for _ in range(2):
                await stderr.expect(lambda line: " started: queues=" in line, timeout=30)
            async with app:
                job = await nap.enqueue(0.0)
                await job.result(timeout=10)  # raises unless it succeeded
            supervisor.terminate()
            with anyio.fail_after(20):
                assert await supervisor.wait() == 0
            await stderr.rest(timeout=5)
            await stdout.rest(timeout=5)
    finally:
        for line in stderr.seen if stderr is not None else []:
            if found := SUPERVISED.search(line):
                try:
                    os.kill(int(found.group(1)), signal.SIGKILL)
                except ProcessLookupError:
                    pass
        await server.kill()
    assert f"finished {job.id}" in stdout.seen
    log = "\n".join(stderr.seen)
    # A child still waiting has not failed: the supervisor restarted none.
    assert "unexpectedly" not in log, log
    assert "Traceback" not in log, log
