"""Helpers of the Redis-specific tests: URLs, run and settlement records to wait on, lines of
a child process, and a private redis-server a test may stop and start.

tests/redis/ has no ``__init__.py`` on purpose: tests/ is on ``sys.path`` (for ``services``
and ``apps``), so a package there named ``redis`` would shadow the redis client library, in
the tests and in every worker subprocess. Its modules are top-level modules instead, with
names no other module uses; and since mypy would then see two modules named ``conftest``,
the fixtures live in the test modules, built from the helpers here.
"""

from __future__ import annotations

import os
import socket
import subprocess
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import anyio
import pytest
import services
from anyio.abc import ByteReceiveStream, Process
from anyio.streams.buffered import BufferedByteReceiveStream
from asyncq_redis import RedisBackend

import asyncq
from asyncq.backend import Backend, Outcome, Settlement

HERE = Path(__file__).parent


def redis_url(prefix: str, *, db: int = 15, port: int = 6379, **options: object) -> str:
    """A broker URL on the local Redis (db 15 unless told), keys under ``prefix``."""
    return f"redis://127.0.0.1:{port}/{db}?{urlencode({'prefix': prefix, **options})}"


@contextmanager
def claimed_prefix(unique: str) -> Iterator[str]:
    """A key prefix for one test on the shared Redis; its keys are deleted afterwards."""
    services.require_redis()
    try:
        yield unique
    finally:
        services.delete_redis_keys(unique)


def redis_client(app: asyncq.App) -> Any:
    """The redis-py client of ``app``'s Redis backend (connected while the App is open)."""
    backend = app.backend
    assert isinstance(backend, RedisBackend)
    return backend.client


def worker_env() -> dict[str, str]:
    """The environment of a worker subprocess: the modules of this directory importable."""
    path = os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path}


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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PrivateRedis:
    """A redis-server of this test's own, persisting every write (AOF, fsync always) in
    ``directory``, so it can be stopped and started again without losing data."""

    def __init__(self, executable: str, directory: Path) -> None:
        self.executable = executable
        self.directory = directory
        self.port = free_port()
        self.process: Process | None = None
        self.log: list[str] = []

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self, *, timeout: float = 10.0) -> None:
        """Start the server and return once it accepts connections (its data loaded)."""
        assert self.process is None, "already running"
        command = [
            self.executable,
            *("--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory)),
            *("--appendonly", "yes", "--appendfsync", "always", "--save", ""),
        ]
        self.process = await anyio.open_process(
            command, stdin=subprocess.DEVNULL, stderr=subprocess.STDOUT
        )
        lines = Lines(self.process.stdout)
        try:
            await lines.expect(lambda line: "Ready to accept connections" in line, timeout=timeout)
        finally:
            self.log += lines.seen
        # The rest of its log (a few lines at shutdown) fits in the pipe: nothing reads it.

    async def stop(self) -> None:
        """SIGTERM, as a service manager would, and wait until the server has exited."""
        process, self.process = self.process, None
        assert process is not None, "not running"
        process.terminate()
        with anyio.fail_after(10):
            await process.wait()
        await process.aclose()

    async def kill(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            with anyio.CancelScope(shield=True):
                if process.returncode is None:
                    process.kill()
                await process.aclose()
