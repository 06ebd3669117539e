"""What is particular to a Redis Cluster (``?cluster=true``); the contract suite runs on one
too (tests/test_contract.py, ``redis-cluster``). The failover tests start a cluster of their
own, since they kill its nodes."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import pytest
import redis
from redis.cluster import RedisCluster

import asyncq
from asyncq.errors import BrokerUnavailable, ConfigurationError

from .redis_cluster_support import LocalRedisCluster, cluster, delete_cluster_keys

pytestmark = pytest.mark.anyio


@pytest.fixture
def prefix(request: pytest.FixtureRequest) -> Iterator[str]:
    name = f"cl{os.urandom(4).hex()}"
    yield name
    delete_cluster_keys(name)


@pytest.fixture
async def own_cluster() -> AsyncIterator[LocalRedisCluster]:
    local = LocalRedisCluster()
    await anyio.to_thread.run_sync(local.start)
    try:
        yield local
    finally:
        await anyio.to_thread.run_sync(local.stop)


def _master_port(local: LocalRedisCluster, key: str) -> int:
    with RedisCluster(host="127.0.0.1", port=local.base) as client:
        port: int = client.get_node_from_key(key).port
        return port


def _replica_of(local: LocalRedisCluster, master_port: int) -> int:
    for port in local.ports:
        with redis.Redis(host="127.0.0.1", port=port) as node:
            role: Any = node.role()
        # A replica answers [b"slave", master host, master port, state, offset].
        if role[0] == b"slave" and int(role[2]) == master_port:
            return port
    raise AssertionError(f"no replica of {master_port}")


def _queues_on_every_master(local: LocalRedisCluster, count: int = 3) -> list[str]:
    """Queue names whose keys land on ``count`` different masters."""
    found: dict[int, str] = {}
    with RedisCluster(host="127.0.0.1", port=local.base) as client:
        for i in range(200):
            name = f"q{i}"
            found.setdefault(client.get_node_from_key(f"{{{name}}}").port, name)
            if len(found) == count:
                return list(found.values())
    raise AssertionError("queue names did not spread over the masters")


async def test_one_worker_serves_queues_on_every_master(prefix: str) -> None:
    local = cluster()
    queues = _queues_on_every_master(local)
    app = asyncq.App(f"{local.url()}&prefix={prefix}")
    ran: list[tuple[str, int]] = []
    tasks = {}
    for q in queues:

        async def handler(n: int, q: str = q) -> None:
            ran.append((q, n))

        tasks[q] = app.task(name=f"job-{q}", queue=q)(handler)
    async with app, anyio.create_task_group() as tg:
        tg.start_soon(lambda: app.run_worker(queues=queues, concurrency=10))
        # Enqueued while the worker blocks on all three masters at once: each wakes it.
        for n in range(3):
            for q in queues:
                job = await tasks[q].enqueue(n)
                await job.result(timeout=10)
        stats = {s.queue: s for s in await app.backend.queue_stats()}
        tg.cancel_scope.cancel()
    assert sorted(ran) == sorted((q, n) for q in queues for n in range(3))
    assert set(stats) == set(queues)


@pytest.mark.parametrize(
    ("query", "error"),
    [
        ("/3?cluster=true", "only db 0"),
        ("/0?cluster=true&wait_timeout=2", "wait_timeout without wait_replicas"),
        ("/0?cluster=maybe", "option 'cluster'"),
        ("/0?wait_replicas=0", "option 'wait_replicas'"),
        ("/0?wait_replicas=99", "option 'wait_replicas'"),
    ],
)
def test_cluster_urls_refuse_what_a_cluster_cannot_do(query: str, error: str) -> None:
    with pytest.raises(ConfigurationError, match=error):
        asyncq.App(f"redis://127.0.0.1:7000{query}").backend  # noqa: B018  # resolved here


async def test_an_enqueue_that_no_replica_took_raises(
    own_cluster: LocalRedisCluster, prefix: str
) -> None:
    """``wait_replicas``: with the queue's replica stopped, the enqueue cannot be confirmed
    as replicated, and says so within ``wait_timeout``."""
    master = _master_port(own_cluster, "{default}")
    replica = _replica_of(own_cluster, master)
    url = f"{own_cluster.url()}&prefix={prefix}&wait_replicas=1&wait_timeout=0.3"
    app = asyncq.App(url)

    @app.task
    async def noop() -> None:
        pass

    async with app:
        await noop.enqueue()  # replicated: returns
        pid = int((own_cluster.directory / str(replica) / "pid").read_text())
        os.kill(pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            with pytest.raises(BrokerUnavailable, match="only 0 of 1 replicas"):
                await noop.enqueue()
            assert time.monotonic() - started < 3
        finally:
            os.kill(pid, signal.SIGCONT)


@pytest.mark.slow
async def test_a_killed_master_is_replaced_and_no_confirmed_job_is_lost(
    own_cluster: LocalRedisCluster, prefix: str
) -> None:
    """SIGKILL the master of the queue's slot while a producer enqueues (each enqueue
    waiting for one replica) and a worker runs: its replica takes over; enqueues fail with
    ``BrokerUnavailable`` until the shard has a replica again (the killed node, restarted,
    rejoins as one), then go on; every job whose enqueue returned runs."""
    master = _master_port(own_cluster, "{default}")
    replica = _replica_of(own_cluster, master)
    url = f"{own_cluster.url()}&prefix={prefix}&wait_replicas=1&visibility_timeout=3"
    app = asyncq.App(url)
    ran: set[int] = set()
    all_ran = anyio.Event()
    confirmed: list[int] = []

    @app.task
    async def record(n: int) -> None:
        ran.add(n)
        if len(confirmed) == 600 and ran.issuperset(confirmed):
            all_ran.set()

    failures: list[float] = []
    killed_at = restarted_at = 0.0
    async with app, anyio.create_task_group() as tg:
        tg.start_soon(lambda: app.run_worker(concurrency=20))
        n = 0
        while len(confirmed) < 600:
            if len(confirmed) == 200 and not killed_at:
                await anyio.to_thread.run_sync(own_cluster.kill, master)
                killed_at = time.monotonic()
            if failures and not restarted_at and time.monotonic() - killed_at > 5:
                # The replica has been promoted by now; the shard lacks a replica until
                # the old master is back.
                await anyio.to_thread.run_sync(own_cluster.restart, master)
                restarted_at = time.monotonic()
            try:
                await record.options(key=f"n{n}").enqueue(n)
            except BrokerUnavailable:
                failures.append(time.monotonic())
                await anyio.sleep(0.2)  # a producer's backoff, not a synchronisation
                continue
            confirmed.append(n)
            n += 1
        with anyio.fail_after(60):
            if not ran.issuperset(confirmed):
                await all_ran.wait()
        tg.cancel_scope.cancel()
    assert ran.issuperset(confirmed)
    with RedisCluster(host="127.0.0.1", port=replica) as client:
        assert client.get_node_from_key("{default}").port == replica  # promoted
    assert failures, "the enqueues never noticed the master was gone"
    assert failures[-1] - killed_at < 30
    print(
        f"master killed: enqueues refused for {failures[-1] - killed_at:.1f} s "
        f"({len(failures)} tries), the old master restarted after "
        f"{restarted_at - killed_at:.1f} s"
    )
