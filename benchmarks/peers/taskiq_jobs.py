"""What taskiq's runs share whatever its broker: the probe hooks, the three jobs, and the
Peer that enqueues them and starts ``taskiq worker``. Imports taskiq only, so both the Redis
and the RabbitMQ harness (each in its own venv) can use it."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from taskiq import AsyncBroker, TaskiqEvents, TaskiqState

from .common import Kind, Peer, probe

__all__ = ["TaskiqPeer"]


class TaskiqPeer(Peer):
    """taskiq on ``broker``, which ``broker_spec`` (``module:attribute``) names for the CLI."""

    name = "taskiq"

    def __init__(self, broker: AsyncBroker, broker_spec: str) -> None:
        self.broker = broker
        self.broker_spec = broker_spec

        @broker.on_event(TaskiqEvents.WORKER_STARTUP)
        async def startup(state: TaskiqState) -> None:
            await probe.open()

        @broker.on_event(TaskiqEvents.WORKER_SHUTDOWN)
        async def shutdown(state: TaskiqState) -> None:
            await probe.close()

        @broker.task(task_name="noop")
        async def noop() -> None:
            await probe.count()

        @broker.task(task_name="sleep")
        async def sleep() -> None:
            await probe.sleep_then_count()

        @broker.task(task_name="latency")
        async def latency(sent: float) -> None:
            await probe.latency(sent)

        self._tasks: dict[str, Any] = {"noop": noop, "sleep": sleep}
        self._latency = latency

    @asynccontextmanager
    async def producer(self) -> AsyncIterator[None]:
        await self.broker.startup()
        try:
            yield
        finally:
            await self.broker.shutdown()

    async def enqueue(self, kind: Kind) -> None:
        await self._tasks[kind].kiq()

    async def enqueue_latency(self, sent: float) -> None:
        await self._latency.kiq(sent)

    def worker_command(self, concurrency: int) -> list[str]:
        command = [sys.executable, "-m", "taskiq", "worker", self.broker_spec, "--workers", "1"]
        return [*command, "--max-async-tasks", str(concurrency), "--log-level", "WARNING"]
