"""What the broker-specific tests (tests/redis_backend, tests/amqp_backend) wait on: handler runs,
settlements, job statuses and a child process's output lines, each awaited on an event
with a timeout, never by sleeping; and the environment of a worker subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.abc import ByteReceiveStream, Process
from anyio.streams.buffered import BufferedByteReceiveStream

import asyncq
from asyncq.backend import Backend, Outcome, Settlement

__all__ = [
    "Lines",
    "Runs",
    "Settled",
    "exited",
    "kill_and_take_over",
    "run_asyncq",
    "statuses",
    "worker_env",
    "worker_process",
]

TESTS_DIR = Path(__file__).resolve().parent


def worker_env(directory: Path) -> dict[str, str]:
    """The environment of a worker subprocess, with the modules of ``directory`` importable."""
    path = os.pathsep.join(filter(None, [str(directory), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path}


def run_asyncq(
    *argv: str, cwd: Path = TESTS_DIR, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m asyncq ARGV`` run to its end in ``cwd`` (tests/ and the project importable,
    no ``$ASYNCQ_BROKER`` from outside, ``env`` added); it must exit 0 without a traceback."""
    inherited = {k: v for k, v in os.environ.items() if k != "ASYNCQ_BROKER"}
    path = os.pathsep.join([str(TESTS_DIR), str(TESTS_DIR.parent)])
    done = subprocess.run(
        [sys.executable, "-m", "asyncq", *argv],
        cwd=cwd,
        env={**inherited, "PYTHONPATH": path, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    return done


@asynccontextmanager
async def worker_process(
    app: str, url: str, *options: str, stdout: Any = subprocess.PIPE, stderr: Any = subprocess.PIPE
) -> AsyncIterator[Process]:
    """``asyncq run APP --broker URL OPTIONS`` in a child process, ``APP`` one of tests/
    (``apps.observed:app``); killed on the way out if it still runs."""
    argv = [sys.executable, "-m", "asyncq", "run", app, "--broker", url, *options]
    process = await anyio.open_process(
        argv,
        cwd=TESTS_DIR,
        env=worker_env(TESTS_DIR),
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=stderr,
    )
    try:
        yield process
    finally:
        with anyio.CancelScope(shield=True):
            if process.returncode is None:
                process.kill()
            await process.aclose()


async def exited(pid: int) -> None:
    """Return once process ``pid`` has exited, whether or not its parent (for an orphan,
    whatever process adopted it) has reaped it yet."""
    if sys.platform != "linux":
        while True:  # no pidfd: whether a pid is gone can only be polled (a zombie is not)
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            await anyio.sleep(0.05)
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        await anyio.wait_readable(pidfd)  # a pidfd is readable once its process has exited
    finally:
        os.close(pidfd)


class _Watched:
    """Something tests wait on until a condition holds; every change wakes the waiters."""

    def __init__(self) -> None:
        self._changed: anyio.Event | None = None

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    async def wait_until(self, condition: Callable[[], bool], *, timeout: float) -> None:
        with anyio.fail_after(timeout):
            while not condition():
                if self._changed is None:
                    self._changed = anyio.Event()
                await self._changed.wait()


class Runs(_Watched):
    """Every run of a handler in this process, by job id."""

    def __init__(self) -> None:
        super().__init__()
        self.by_job: Counter[str] = Counter()
        self.total = 0

    def record(self, job_id: str) -> None:
        self.by_job[job_id] += 1
        self.total += 1
        self._notify()

    async def reached(self, total: int, *, timeout: float) -> None:
        await self.wait_until(lambda: self.total >= total, timeout=timeout)

    @property
    def duplicates(self) -> int:
        """Runs beyond the first of each job."""
        return sum(n - 1 for n in self.by_job.values())


class Settled(_Watched):
    """The settlements the real backends made, by job id. Wraps each backend object's own
    ``settle``: the backend still does all the work, this only takes note once it is done."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, *backends: Backend) -> None:
        super().__init__()
        self.outcomes: defaultdict[str, list[Outcome]] = defaultdict(list)
        self.succeeded: set[str] = set()
        for backend in backends:
            self._wrap(monkeypatch, backend)

    def _wrap(self, monkeypatch: pytest.MonkeyPatch, backend: Backend) -> None:
        real = backend.settle

        async def settle(settlements: Sequence[Settlement]) -> None:
            await real(settlements)
            for s in settlements:
                self.outcomes[s.delivery.id].append(s.outcome)
                if s.outcome is Outcome.SUCCEEDED:
                    self.succeeded.add(s.delivery.id)
            self._notify()

        monkeypatch.setattr(backend, "settle", settle)

    async def all_succeeded(self, job_ids: Sequence[str], *, timeout: float) -> None:
        wanted = set(job_ids)
        await self.wait_until(lambda: wanted <= self.succeeded, timeout=timeout)

    async def outcome(self, job_id: str, outcome: Outcome, *, timeout: float = 5.0) -> None:
        await self.wait_until(lambda: outcome in self.outcomes[job_id], timeout=timeout)


async def statuses(app: asyncq.App, jobs: Sequence[asyncq.Job[Any]]) -> Counter[asyncq.JobStatus]:
    """How many of ``jobs`` are in each status, read through the public API."""
    found: Counter[asyncq.JobStatus] = Counter()
    limiter = anyio.CapacityLimiter(32)

    async def read(job: asyncq.Job[Any]) -> None:
        async with limiter:
            found[await job.status()] += 1

    async with anyio.create_task_group() as tg:
        for job in jobs:
            tg.start_soon(read, job)
    return found


class Lines:
    """The lines of a child's output, read as they arrive (never waited for by a sleep)."""

    def __init__(self, stream: ByteReceiveStream | None) -> None:
        assert stream is not None
        self._buffered = BufferedByteReceiveStream(stream)
        self.seen: list[str] = []

    async def expect(self, condition: Callable[[str], bool], *, timeout: float) -> str:
        """Read lines until one meets ``condition``; fail at end of output or timeout."""
        with anyio.fail_after(timeout):
            while True:
                try:
                    raw = await self._buffered.receive_until(b"\n", 1 << 20)
                except (anyio.IncompleteRead, anyio.EndOfStream) as exc:
                    seen = "\n".join(self.seen)
                    raise AssertionError(f"output ended before the expected line:\n{seen}") from exc
                line = raw.decode(errors="replace").rstrip("\r")
                self.seen.append(line)
                if condition(line):
                    return line

    async def rest(self, *, timeout: float) -> list[str]:
        """Read the lines left until the output ends, once every process writing to it has
        closed it (exited); fail if that takes longer than ``timeout``."""
        start = len(self.seen)
        with anyio.fail_after(timeout):
            while True:
                try:
                    raw = await self._buffered.receive_until(b"\n", 1 << 20)
                except (anyio.IncompleteRead, anyio.EndOfStream):
                    if self._buffered.buffer:
                        self.seen.append(bytes(self._buffered.buffer).decode(errors="replace"))
                    return self.seen[start:]
                self.seen.append(raw.decode(errors="replace").rstrip("\r"))


async def kill_and_take_over(
    url: str, tmp_path: Path, *, visibility_timeout: float, replacement_after: float = 0.0
) -> float:
    """A worker process starts a job and is SIGKILLed; ``replacement_after`` seconds later a
    worker of this process starts and runs the job again, once, flagged redelivered, on the
    same attempt. Returns the seconds from the kill until the job started again."""
    app = asyncq.App(url, shutdown_timeout=2.0)
    runs: list[tuple[int, bool]] = []
    restarted_at = 0.0

    @app.task(name="lost.work")  # the same task as the subprocess's apps.lost_worker
    async def work() -> str:
        nonlocal restarted_at
        restarted_at = time.monotonic()
        job = asyncq.current_job()
        runs.append((job.attempt, job.redelivered))
        return "completed"

    async with app:
        job = await work.enqueue()
        with (tmp_path / "worker.log").open("wb") as log:
            async with worker_process("apps.lost_worker:app", url, stderr=log) as process:
                stdout = Lines(process.stdout)
                started = await stdout.expect(lambda line: line.startswith("started "), timeout=30)
                assert started == f"started {job.id} attempt=1 redelivered=False"
                assert await job.status() is asyncq.JobStatus.RUNNING
                # SIGKILL before its first lease renewal (a third of the visibility timeout
                # after its start): nothing settled, nothing released, and the lease runs
                # out one visibility timeout after the delivery.
                process.kill()
                killed_at = time.monotonic()
                with anyio.fail_after(10):
                    assert await process.wait() == -9
        # Still the dead worker's: nobody settled or released it.
        assert await job.status() is asyncq.JobStatus.RUNNING
        if replacement_after:
            # The scenario, not a synchronisation: the worker that takes over comes up later.
            await anyio.sleep(replacement_after)
        async with app.worker(concurrency=1):
            assert await job.result(timeout=visibility_timeout + 10) == "completed"
        assert await app.dead_letters() == []
    worker_log = (tmp_path / "worker.log").read_text()
    assert "Traceback" not in worker_log, worker_log
    # It ran twice in all: once in the killed worker (its one "started" line) and once here.
    assert [line for line in stdout.seen if line.startswith("started ")] == [started]
    assert runs == [(1, True)]
    return restarted_at - killed_at
