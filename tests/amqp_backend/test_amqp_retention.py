"""Dead-letter retention on RabbitMQ: a count bound is counted, then applied, under a lock
(an exclusive queue), so two workers trimming one queue at once remove the excess once."""

from __future__ import annotations

import anyio
import pytest

import asyncq
from asyncq.records import TrimmedDeadLetters

from .amqp_support import amqp_url

pytestmark = pytest.mark.anyio


async def test_two_workers_trimming_at_once_remove_the_excess_once(prefix: str) -> None:
    plain = asyncq.App(amqp_url(prefix))

    @plain.task(name="refuse")
    async def refuse(n: int) -> None:
        raise asyncq.Reject("no")

    async with plain:
        await refuse.enqueue_many([(n,) for n in range(10)])
        await plain.run_worker(burst=True)
        assert (await plain.queue_stats(["default"]))["default"].dead == 10

    # Two Apps: two connections, as two worker processes would have.
    first, second = (asyncq.App(amqp_url(prefix, dead_max=4)) for _ in range(2))
    results: list[list[TrimmedDeadLetters]] = []

    async def trim(app: asyncq.App) -> None:
        results.append(await app.backend.trim_dead(["default"]))

    async with first, second:
        for _ in range(5):  # several rounds: the two trims overlap in some of them
            async with anyio.create_task_group() as tg:
                tg.start_soon(trim, first)
                tg.start_soon(trim, second)
        stats = (await first.queue_stats(["default"]))["default"]
        await first.purge_dead("default")
    removed = sum(t.beyond_max for found in results for t in found)
    assert (removed, stats.dead) == (6, 4)
