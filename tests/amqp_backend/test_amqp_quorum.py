"""Quorum queues (``queue_type=quorum``) end to end: results, a delay through the quorum wait
queues, retries, the dead-letter queue and a replay, every queue of the prefix a quorum
queue."""

from __future__ import annotations

import time

import pytest

import asyncq
from asyncq import JobStatus, current_job

from .amqp_support import amqp_url, queue_types, require_rabbitmqctl

pytestmark = pytest.mark.anyio

FAST_BACKOFF = asyncq.Backoff(base=0.01, cap=0.05)


async def test_results_delays_retries_and_dead_letters_on_quorum_queues(prefix: str) -> None:
    require_rabbitmqctl()  # to see the queues' types at the end
    app = asyncq.App(
        amqp_url(prefix, queue_type="quorum"), backoff=FAST_BACKOFF, shutdown_timeout=2.0
    )
    healthy = False
    attempts: list[int] = []

    @app.task
    async def add(a: int, b: int) -> int:
        return a + b

    @app.task
    async def stamp() -> float:
        return time.time()

    @app.task(retries=2)
    async def pay(order: str) -> str:
        attempts.append(current_job().attempt)
        if not healthy:
            raise ConnectionError("payment provider is down")
        return f"paid {order}"

    async with app, app.worker(concurrency=4):
        # A plain job.
        plain = await add.enqueue(2, 3)
        assert await plain.result(timeout=10) == 5

        # A delayed job: it waits out its delay in the quorum wait queues, never less.
        delay = 0.3
        before = time.time()
        delayed = await stamp.options(delay=delay).enqueue()
        assert await delayed.status() is JobStatus.SCHEDULED
        ran_at = await delayed.result(timeout=10)
        early_by = before + delay - ran_at
        assert early_by <= 0, f"ran {early_by * 1000:.1f} ms before its delay was over"

        # A job that fails every attempt: retried, then dead.
        failing = await pay.enqueue("7")
        with pytest.raises(asyncq.JobFailed, match="payment provider is down"):
            await failing.result(timeout=10)
        assert attempts == [1, 2, 3]
        assert await failing.status() is JobStatus.DEAD
        # Counted before it is browsed: a quorum queue counts the messages a browse hands
        # back only once Raft has applied their return, a moment after the browse ends.
        assert (await app.queue_stats())["default"].dead == 1
        (letter,) = await app.dead_letters()
        assert (letter.id, letter.task) == (failing.id, pay.name)
        assert letter.error.type == "ConnectionError"
        assert letter.error.message == "payment provider is down"

        # Replayed once the provider is back: a fresh retry budget, and it succeeds.
        healthy = True
        assert await app.replay_dead(ids=[failing.id]) == 1
        assert await failing.result(timeout=10) == "paid 7"
        assert attempts == [1, 2, 3, 1]
        assert await app.dead_letters() == []
        stats = (await app.queue_stats())["default"]
    print(f"delayed job on quorum queues ran {-early_by * 1000:.1f} ms after its delay")
    assert (stats.pending, stats.scheduled, stats.running, stats.dead) == (0, 0, 0, 0)
    # Every queue asyncq declared for the prefix is a quorum queue: the work queue, its
    # dead-letter and delayed queues, and the wait queues the delay and retries went through.
    types = await queue_types(prefix)
    names = {f"{prefix}.default", f"{prefix}.default.dead", f"{prefix}.default.delayed"}
    assert names <= set(types), types
    assert any(name.startswith(f"{prefix}.wait.") for name in types), types
    assert set(types.values()) == {"quorum"}, types
