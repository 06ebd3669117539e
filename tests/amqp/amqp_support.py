"""Helpers of the AMQP-specific tests: URLs, the prefixes a module's tests claimed, runs and
settlements to wait on, lines of a child process, and rabbitmqctl.

Like tests/redis/, tests/amqp/ has no ``__init__.py``: its modules are top-level modules
with names no other module uses (tests/ is on ``sys.path``, and a package named ``amqp``
there could shadow a client library of that name). Since mypy would see two modules
named ``conftest``, the fixtures live in the test modules, built from the helpers here.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
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
from anyio.abc import ByteReceiveStream
from anyio.streams.buffered import BufferedByteReceiveStream

import asyncq
from asyncq.backend import Backend, Outcome, Settlement

HERE = Path(__file__).parent


def amqp_url(prefix: str, **options: object) -> str:
    """A broker URL on the local RabbitMQ, records in db 15 of the local Redis; every queue,
    exchange and record key starts with ``prefix``."""
    query = urlencode({"records": services.REDIS_URL, "prefix": prefix, **options})
    return f"{services.AMQP_URL}?{query}"


class Prefixes:
    """The prefixes one module's tests claimed. Each test's Redis keys go when it ends; the
    queues and exchanges of all of them go once, when the module ends, because listing
    them takes rabbitmqctl about a second a call."""

    def __init__(self) -> None:
        self.claimed: list[str] = []

    @contextmanager
    def claim(self, unique: str) -> Iterator[str]:
        services.require_rabbitmq_and_redis()
        self.claimed.append(unique)
        try:
            yield unique
        finally:
            services.delete_redis_keys(unique)

    def delete_entities(self) -> None:
        if self.claimed:
            pattern = "|".join(rf"{re.escape(p)}\." for p in self.claimed)
            services.delete_amqp_entities(pattern)


@contextmanager
def module_prefixes() -> Iterator[Prefixes]:
    prefixes = Prefixes()
    try:
        yield prefixes
    finally:
        prefixes.delete_entities()


def worker_env() -> dict[str, str]:
    """The environment of a worker subprocess: the modules of this directory importable."""
    path = os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path}


# -- waiting on what happened ----------------------------------------------------------------
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
    """The settlements the real backend made, by job id. Wraps the backend object's own
    ``settle``: the backend still does all the work, this only takes note once it is done."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, backend: Backend) -> None:
        super().__init__()
        self.outcomes: defaultdict[str, list[Outcome]] = defaultdict(list)
        self.succeeded: set[str] = set()
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


# -- rabbitmqctl -----------------------------------------------------------------------------
@functools.cache
def _rabbitmqctl() -> tuple[str | None, str]:
    """rabbitmqctl's path, or None and why it cannot be used (checked once per session)."""
    path = shutil.which("rabbitmqctl")
    if path is None:
        return None, "rabbitmqctl is not installed (it comes with the rabbitmq-server package)"
    # It talks to the node with the node's Erlang cookie, which only root (or the rabbitmq
    # user) can read.
    ping = subprocess.run(
        [path, "-q", "ping"], capture_output=True, text=True, timeout=90, check=False
    )
    if ping.returncode != 0:
        why = (ping.stderr or ping.stdout).strip()
        return None, f"rabbitmqctl cannot reach the local node (run as root?): {why}"
    return path, ""


def require_rabbitmqctl() -> str:
    """The path of a working ``rabbitmqctl``, for tests that inspect or stop the broker;
    without one the test fails in CI (``CI=true``) and is skipped elsewhere."""
    path, why = _rabbitmqctl()
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    return path


async def rabbitmqctl(*args: str, timeout: float = 60.0) -> str:
    """Run ``rabbitmqctl ARGS`` without blocking the event loop; its output, or fail."""
    command = [require_rabbitmqctl(), "-q", *args]
    with anyio.fail_after(timeout):
        done = await anyio.run_process(command, check=False, stdin=subprocess.DEVNULL)
    output = done.stdout.decode(errors="replace")
    if done.returncode != 0:
        error = done.stderr.decode(errors="replace")
        raise AssertionError(f"rabbitmqctl {' '.join(args)} exited {done.returncode}: {error}")
    return output


async def queue_types(prefix: str) -> dict[str, str]:
    """The type (classic, quorum) of each queue whose name starts with ``prefix.``."""
    listed = await rabbitmqctl("list_queues", "--no-table-headers", "name", "type")
    found: dict[str, str] = {}
    for line in listed.splitlines():
        name, _, kind = line.partition("\t")
        if name.startswith(f"{prefix}."):
            found[name] = kind.strip()
    return found
