"""Redis going away under a busy worker: its connections killed, the server restarted. Every
job still completes (at least once), none is lost, the worker keeps going, and the producer
sees asyncq's own errors, never redis-py's."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import anyio
import pytest
import redis.asyncio as aioredis
import services
from asyncq_redis import RedisBackend, RedisSettings
from harness import Runs, Settled, statuses

import asyncq
from asyncq import JobStatus, current_job

from .redis_support import PrivateRedis, redis_url

pytestmark = pytest.mark.anyio

JOBS = 5_000


async def test_worker_survives_its_connections_being_killed(
    prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The worker's connections carry a name (redis-py takes client_name from the connection
    # URL the settings hand it), so the test kills only them, never its own connection nor
    # another test's or session's on the shared server. CLIENT KILL has no NAME filter, so
    # they are picked from CLIENT LIST and killed by ID.
    name = f"asyncq-test-{prefix}"
    settings = RedisSettings.from_url(redis_url(prefix, visibility_timeout=1))
    settings = dataclasses.replace(
        settings, connection_url=f"{settings.connection_url}?client_name={name}"
    )
    app = asyncq.App(RedisBackend(settings), shutdown_timeout=5.0)
    runs = Runs()

    @app.task
    async def work(n: int) -> int:
        runs.record(current_job().id)
        return n

    async def kill_worker_connections(killer: aioredis.Redis) -> int:
        clients = await killer.client_list()
        ids = [c["id"] for c in clients if c.get("name") == name]
        killed = 0
        for client_id in ids:
            killed += await killer.client_kill_filter(_id=client_id)
        return killed

    settled = Settled(monkeypatch, app.backend)
    kills: list[int] = []
    runs_at_kills: list[int] = []
    async with app, aioredis.Redis.from_url(services.REDIS_URL) as killer:
        jobs = await work.enqueue_many([(n,) for n in range(JOBS)])
        ids = [job.id for job in jobs]
        async with app.worker(concurrency=50):
            for threshold in range(250, JOBS, 500):
                # Between a kill and its reconnection the worker may hold no connection at
                # all: then try again a little later.
                for attempt in range(3):
                    await runs.reached(threshold + 50 * attempt, timeout=30)
                    runs_at_kills.append(runs.total)
                    killed = await kill_worker_connections(killer)
                    if killed:
                        break
                kills.append(killed)
            await settled.all_succeeded(ids, timeout=30)
        found = await statuses(app, jobs)
        stats = (await app.queue_stats())["default"]
    print(
        f"{JOBS} jobs, connections killed {kills}: {runs.total} runs, "
        f"{runs.duplicates} duplicate(s)"
    )
    # Ten rounds, each while the worker was busy, each hitting its connections.
    assert len(kills) == 10
    assert all(n >= 1 for n in kills), (kills, runs_at_kills)
    assert max(runs_at_kills) < JOBS, runs_at_kills
    assert set(runs.by_job) == set(ids)  # every job ran ...
    assert found == {JobStatus.SUCCEEDED: JOBS}  # ... and succeeded: none lost
    assert (stats.pending, stats.scheduled, stats.running, stats.dead) == (0, 0, 0, 0)
    assert runs.duplicates <= JOBS // 100  # at least once, and rarely more than once


async def test_jobs_survive_a_redis_restart(
    unique: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = PrivateRedis(services.require_redis_server(), tmp_path)
    try:
        await server.start()
        url = f"{server.url}?prefix={unique}&visibility_timeout=1"
        app = asyncq.App(url, shutdown_timeout=5.0)
        runs = Runs()
        stopped = anyio.Event()

        @app.task
        async def work(n: int) -> int:
            runs.record(current_job().id)
            if n >= 1000 and not stopped.is_set():
                # Held until the server is down, however fast the worker drains: the stop
                # comes mid-run, with jobs running and most still queued.
                await stopped.wait()
            return n

        settled = Settled(monkeypatch, app.backend)
        produced: list[asyncq.Job[int]] = []
        errors: list[asyncq.BrokerError] = []
        refused = anyio.Event()
        restarted = False

        async def produce() -> None:
            """Enqueue one job after another, and read stats, until the server is back."""
            while True:
                try:
                    produced.append(await work.enqueue(-1))
                    await app.queue_stats()
                except asyncq.BrokerError as exc:  # anything else fails the test
                    errors.append(exc)
                    refused.set()
                    continue
                if restarted:
                    return

        async with app:
            jobs = await work.enqueue_many([(n,) for n in range(JOBS)])
            async with app.worker(concurrency=50):
                await runs.reached(1000, timeout=30)
                await server.stop()
                runs_at_stop = runs.total
                stopped.set()
                async with anyio.create_task_group() as tg:
                    tg.start_soon(produce)
                    # The producer's client retries for about 1.5 s before giving up.
                    with anyio.fail_after(15):
                        await refused.wait()
                    await server.start()
                    restarted = True
                everything = [*jobs, *produced]
                await settled.all_succeeded([job.id for job in everything], timeout=30)
            found = await statuses(app, everything)
            stats = (await app.queue_stats())["default"]
    finally:
        await server.kill()
    print(
        f"{JOBS} jobs, Redis restarted: {runs.total} runs, {runs.duplicates} duplicate(s); "
        f"producer: {len(errors)} error(s) while down, {len(produced)} job(s) enqueued"
    )
    assert runs_at_stop < JOBS - 1000  # stopped mid-run: most jobs ran after the restart
    assert all(isinstance(exc, asyncq.BrokerUnavailable) for exc in errors), errors
    assert produced  # the producer's enqueue worked again once the server was back
    assert set(runs.by_job) == {job.id for job in everything}
    assert found == {JobStatus.SUCCEEDED: len(everything)}  # none lost
    assert (stats.pending, stats.scheduled, stats.running, stats.dead) == (0, 0, 0, 0)
