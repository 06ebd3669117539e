"""asyncq on a three-node RabbitMQ cluster with quorum queues, through a URL naming all
three nodes: the node leading the work queue's Raft group is killed (SIGKILL) under a
running worker and producers, and no job whose enqueue returned is lost; producers see
``BrokerUnavailable`` only while their connection moves to another node."""

from __future__ import annotations

import time
from collections.abc import Callable

import anyio
import asyncq_amqp.connection
import pytest
from harness import Runs

import asyncq
from asyncq import current_job

from .amqp_support import PrivateCluster

pytestmark = pytest.mark.anyio

PRODUCERS = 4
BEFORE = 300
"""Jobs confirmed before the kill, so the worker is busy when it comes."""
AFTER = 300
"""Jobs confirmed after the killed node is gone, through the surviving two."""


class _FirstHostFirst:
    """In place of the random module in connection.py: every connection's first round
    starts at the URL's first host."""

    @staticmethod
    def randrange(stop: int) -> int:
        return 0


class Producers:
    """What the producers saw: each confirmed job, and when each enqueue failed."""

    def __init__(self) -> None:
        self.confirmed = Runs()
        self.failures: list[tuple[float, str]] = []
        self.confirmed_at: list[float] = []
        self.longest = 0.0
        """The longest an enqueue took after the kill (one waiting for a reconnect)."""
        self.after_kill = 0.0

    async def produce(self, work: asyncq.Task[[int], int], n: Callable[[], int]) -> None:
        while True:
            began = time.monotonic()
            try:
                job = await work.enqueue(n())
            except asyncq.BrokerUnavailable as exc:
                self.failures.append((time.monotonic(), str(exc)))
                continue  # anything else fails the test
            ended = time.monotonic()
            if self.after_kill and began >= self.after_kill:
                self.longest = max(self.longest, ended - began)
            self.confirmed_at.append(ended)
            self.confirmed.record(job.id)


@pytest.mark.slow
async def test_killing_the_queue_leader_loses_no_confirmed_job(
    rabbitmq_cluster: PrivateCluster, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster = rabbitmq_cluster
    queue = f"{prefix}.default"  # the work queue of the default queue (topology.Names)
    runs = Runs()
    counter = iter(range(1_000_000))

    def declare(app: asyncq.App) -> asyncq.Task[[int], int]:
        @app.task(name="work")
        async def work(n: int) -> int:
            runs.record(current_job().id)
            return n

        return work

    # Declare the queue and find its leader first; then list that node first and start
    # every round there, so both of the App's connections (publishing and consuming) are
    # on the node that dies, and its death moves them.
    setup = asyncq.App(cluster.url(prefix))
    async with setup:
        await declare(setup).enqueue(-1)
    leader = await cluster.leader(queue)
    others = [n for n in (1, 2, 3) if n != leader]
    url = cluster.url(prefix, first=leader)
    monkeypatch.setattr(asyncq_amqp.connection, "random", _FirstHostFirst())

    app = asyncq.App(url, shutdown_timeout=5.0)
    work = declare(app)
    producers = Producers()
    began = time.monotonic()
    async with app, app.worker(concurrency=20):
        async with anyio.create_task_group() as tg:
            for _ in range(PRODUCERS):
                tg.start_soon(producers.produce, work, lambda: next(counter))
            await producers.confirmed.reached(BEFORE, timeout=60)
            await runs.reached(BEFORE // 2, timeout=60)
            killing = time.monotonic()
            try:
                await cluster.kill(leader)
                producers.after_kill = killed = time.monotonic()
                at_kill = producers.confirmed.total
                try:
                    await producers.confirmed.reached(at_kill + AFTER, timeout=90)
                except TimeoutError:
                    raise AssertionError(
                        f"{producers.confirmed.total - at_kill} confirmed in 90 s after the "
                        f"kill; {len(producers.failures)} failures, the last: "
                        f"{producers.failures[-3:]}"
                    ) from None
            finally:
                tg.cancel_scope.cancel()
        produced = time.monotonic()
        confirmed = set(producers.confirmed.by_job)
        # Every job whose enqueue returned runs, however long the move takes (bounded).
        await runs.wait_until(lambda: confirmed <= set(runs.by_job), timeout=90)
        drained = time.monotonic()
        new_leader = await cluster.leader(queue, ask=others[0])
    with anyio.CancelScope(shield=True):
        await cluster.restart(leader)
    restarted = time.monotonic()

    failed_at = [t for t, _ in producers.failures]
    back = [t for t in producers.confirmed_at if t > killed]
    failing = (
        f" from +{min(failed_at) - killing:.2f} s to +{max(failed_at) - killing:.2f} s"
        if failed_at
        else ""
    )
    print(
        f"\nleader node {leader} killed in {killed - killing:.2f} s after {at_kill} "
        f"confirmed; new leader node {new_leader}; {len(confirmed)} confirmed, "
        f"{len(runs.by_job)} ran ({runs.duplicates} duplicate runs); {len(failed_at)} "
        f"enqueue(s) failed with BrokerUnavailable{failing}; first enqueue confirmed after "
        f"the kill at +{min(back) - killing:.2f} s, longest enqueue after it "
        f"{producers.longest:.2f} s; all ran {drained - produced:.2f} s after the producers "
        f"stopped; node back in {restarted - drained:.1f} s; {restarted - began:.1f} s in all"
    )
    assert new_leader != leader
    assert confirmed <= set(runs.by_job), "a confirmed job never ran"
    # BrokerUnavailable only while the connection moved and the queue elected a leader
    # (it refuses publishes meanwhile): none before the kill, none once enqueues went
    # through again, and for a few seconds at most.
    assert all(killing <= t < min(back) for t in failed_at), producers.failures
    assert min(back) - killing < 15.0
