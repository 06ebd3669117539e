"""Redis behind Sentinel (``redis+sentinel://``): the contract's basics through the
sentinels, and a failover under load that loses no confirmed job."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
import services
from asyncq_redis.sentinel import OneAtATimeSentinel

import asyncq
from asyncq.errors import BrokerUnavailable, ConfigurationError

from .redis_sentinel_support import SERVICE, SentinelGroup
from .redis_support import free_port

pytestmark = pytest.mark.anyio


@pytest.fixture
async def group(tmp_path: Path) -> AsyncIterator[SentinelGroup]:
    sentinels = SentinelGroup(services.require_redis_server(), tmp_path)
    try:
        await anyio.to_thread.run_sync(sentinels.start)
        yield sentinels
    finally:
        await anyio.to_thread.run_sync(sentinels.stop)


@pytest.mark.parametrize(
    ("url", "error"),
    [
        ("redis+sentinel://127.0.0.1:26379", "names its service"),
        ("redis+sentinel://127.0.0.1:26379/a/b/c", "names its service"),
        ("redis+sentinel://127.0.0.1:26379/mymaster/x", "must be a number"),
        ("redis+sentinel://127.0.0.1:nope/mymaster", "bad sentinel port"),
        ("redis+sentinel://127.0.0.1:26379,:1/mymaster", "without a host"),
        ("redis+sentinel://127.0.0.1:26379/mymaster?cluster=true", "cannot be a cluster"),
    ],
)
def test_a_bad_sentinel_url_says_what_is_wrong(url: str, error: str) -> None:
    with pytest.raises(ConfigurationError, match=error):
        asyncq.App(url).backend  # noqa: B018  # resolved here


async def test_jobs_run_through_the_sentinels_master(group: SentinelGroup) -> None:
    app = asyncq.App(group.url("?prefix=sent"))

    @app.task
    async def double(n: int) -> int:
        return 2 * n

    async with app, app.worker():
        jobs = [await double.enqueue(n) for n in range(20)]
        assert [await job.result(timeout=10) for job in jobs] == [2 * n for n in range(20)]


async def test_concurrent_master_lookups_keep_every_sentinel(group: SentinelGroup) -> None:
    """Every connection of a pool asks the sentinels again after a failover, all at once.
    The first sentinel here is down, so each lookup moves the one that answers to the
    front; interleaved, they would leave that one twice in the list and drop another."""
    down = ("127.0.0.1", free_port())
    listed = [down, *(("127.0.0.1", port) for port in group.sentinels)]
    sentinel = OneAtATimeSentinel(listed, socket_connect_timeout=1)
    clients = list(sentinel.sentinels)
    try:
        masters: set[tuple[str, int]] = set()
        async with anyio.create_task_group() as tg:
            for _ in range(20):

                async def look_up() -> None:
                    masters.add(await sentinel.discover_master(SERVICE))

                tg.start_soon(look_up)
        assert masters == {("127.0.0.1", group.master_port())}
        assert sorted(map(id, sentinel.sentinels)) == sorted(map(id, clients))
    finally:
        for client in clients:
            await client.aclose()


@pytest.mark.slow
async def test_a_killed_master_fails_over_and_no_confirmed_job_is_lost(
    group: SentinelGroup,
) -> None:
    """SIGKILL the master while a producer enqueues (each enqueue waiting for a replica)
    and a worker runs: the sentinels promote a replica, the clients follow them there,
    producers see ``BrokerUnavailable`` only meanwhile, and every job whose enqueue returned
    runs."""
    old = group.master_port()
    app = asyncq.App(group.url("?prefix=sentfail&wait_replicas=1&visibility_timeout=3"))
    ran: set[int] = set()
    confirmed: list[int] = []
    all_ran = anyio.Event()

    @app.task
    async def record(n: int) -> None:
        ran.add(n)
        if len(confirmed) == 600 and ran.issuperset(confirmed):
            all_ran.set()

    failures: list[float] = []
    killed_at = 0.0
    slowest = 0.0
    async with app, anyio.create_task_group() as tg:
        tg.start_soon(lambda: app.run_worker(concurrency=20))
        n = 0
        while len(confirmed) < 600:
            if len(confirmed) == 200 and not killed_at:
                group.kill(old)
                killed_at = time.monotonic()
            started = time.monotonic()
            try:
                await record.options(key=f"n{n}").enqueue(n)
                slowest = max(slowest, time.monotonic() - started)
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
    assert group.master_port() != old
    # The enqueues' retries may ride out the failover (the sentinels act within about
    # two seconds here): then none is refused, and the slowest one took that long.
    refused = failures[-1] - killed_at if failures else 0.0
    assert refused < 30
    print(
        f"master killed: enqueues refused for {refused:.1f} s ({len(failures)} tries), "
        f"the slowest confirmed one took {slowest:.1f} s"
    )
