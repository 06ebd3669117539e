"""Helpers of the AMQP-specific tests: URLs, the prefixes a module's tests claimed, runs and
settlements to wait on, lines of a child process, and rabbitmqctl.

Like tests/redis/, tests/amqp/ has no ``__init__.py``: its modules are top-level modules
with names no other module uses (tests/ is on ``sys.path``, and a package named ``amqp``
there could shadow a client library of that name). Since mypy would see two modules
named ``conftest``, the fixtures live in the test modules, built from the helpers here.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlencode

import anyio
import pytest
import services


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
