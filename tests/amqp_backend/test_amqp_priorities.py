"""Priorities on RabbitMQ: a classic work queue is declared with ``x-max-priority`` 9 and a
job's priority travels as the message's ``priority`` property, through waits and retries.
A work queue declared before priorities keeps working as it is, with one warning, its jobs
in arrival order; quorum queues have no priorities, which is an error, not a silent no-op."""

from __future__ import annotations

import logging

import aio_pika
import anyio
import pytest
import services

import asyncq
from asyncq.errors import ConfigurationError
from asyncq.testing.suite import CAPABILITIES

from .amqp_support import amqp_url, rabbitmq_only_url, rabbitmqctl, require_rabbitmqctl

pytestmark = pytest.mark.anyio


class Runs:
    def __init__(self, count: int) -> None:
        self.order: list[str] = []
        self.count = count
        self.done = anyio.Event()

    def ran(self, name: str) -> None:
        self.order.append(name)
        if len(self.order) == self.count:
            self.done.set()


async def _arguments(name: str) -> str:
    listed = await rabbitmqctl("list_queues", "--no-table-headers", "name", "arguments")
    for line in listed.splitlines():
        queue, _, arguments = line.partition("\t")
        if queue == name:
            return arguments
    raise AssertionError(f"no queue {name!r} in {listed!r}")


async def test_a_classic_work_queue_has_priorities_and_only_it(prefix: str) -> None:
    require_rabbitmqctl()
    app = asyncq.App(amqp_url(prefix))

    @app.task
    async def job() -> None: ...

    async with app:
        await job.options(priority=3).enqueue()
    assert "x-max-priority" in await _arguments(f"{prefix}.default")
    for other in (f"{prefix}.default.dead", f"{prefix}.default.delayed"):
        assert "x-max-priority" not in await _arguments(other)


@pytest.mark.parametrize("records", [True, False], ids=["records", "no-records"])
async def test_a_queue_from_before_priorities_keeps_working_with_one_warning(
    prefix: str, records: bool, caplog: pytest.LogCaptureFixture
) -> None:
    # The work queue as asyncq declared it before priorities: no x-max-priority.
    name = f"{prefix}.default"
    async with await aio_pika.connect(services.AMQP_URL) as connection:
        channel = await connection.channel()
        await channel.declare_queue(name, durable=True, arguments={"x-queue-type": "classic"})
    url = amqp_url(prefix) if records else rabbitmq_only_url(prefix)
    app = asyncq.App(url)
    runs = Runs(6)

    @app.task
    async def job(name: str) -> None:
        runs.ran(name)

    with caplog.at_level(logging.WARNING, logger="asyncq.amqp"):
        async with app:
            await job.enqueue_many([(f"p0-{i}",) for i in range(3)])
            await job.options(priority=9).enqueue_many([(f"p9-{i}",) for i in range(3)])
            async with app.worker(concurrency=1, prefetch=0):
                with anyio.fail_after(20):
                    await runs.done.wait()
            # Another enqueue, a stats read: the queue was looked at once in this process.
            await job.enqueue("again")
            await app.queue_stats()
    # Priorities ignored: arrival order, nothing lost.
    assert runs.order == ["p0-0", "p0-1", "p0-2", "p9-0", "p9-1", "p9-2"]
    warnings = [r.getMessage() for r in caplog.records if "has no priorities" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert f"RabbitMQ queue {name!r} has no priorities" in warnings[0]
    assert "README's 'Priorities'" in warnings[0]


async def test_quorum_queues_refuse_priorities_clearly(prefix: str) -> None:
    url = amqp_url(prefix, queue_type="quorum")
    app = asyncq.App(url)

    @app.task
    async def plain() -> None: ...

    backend = app.backend
    assert backend.supports_priorities is False
    (needs_priorities,) = [c for c in CAPABILITIES if c.marker == "needs_priorities"]
    assert not needs_priorities.has(backend)
    async with app:
        with pytest.raises(ConfigurationError, match="quorum queues .* have no priorities"):
            await plain.options(priority=3).enqueue()
        await plain.options(priority=0).enqueue()  # priority 0 is every job's: fine
        stats = (await app.queue_stats(["default"]))["default"]
    assert stats.pending == 1  # the refused job was not sent

    @app.task(priority=5)
    async def urgent() -> None: ...

    with pytest.raises(ConfigurationError, match=r"task '.*urgent' has priority=5.*quorum"):
        async with app:
            pass
