"""PostgreSQL restarted under a busy worker and a producer: every confirmed job completes,
none is lost, the worker keeps going, and the producer sees ``BrokerUnavailable`` only while
the server is down, never asyncpg's own errors. Once after a crash (``pg_ctl stop -m
immediate``, then recovery from its WAL), once after a clean shutdown (``-m fast``) whose
closing the clients hear late."""

from __future__ import annotations

import time

import anyio
import asyncpg
import pytest
from harness import Runs, Settled, statuses

import asyncq
from asyncq import JobStatus, current_job

from .postgres_support import LateClosingProxy, PrivatePostgres

pytestmark = pytest.mark.anyio

JOBS = 5_000
DOWN_FOR = 2.0


async def test_jobs_survive_a_postgres_restart(monkeypatch: pytest.MonkeyPatch) -> None:
    server = PrivatePostgres()
    try:
        server.start()
        app = asyncq.App(f"{server.url}?visibility_timeout=2", shutdown_timeout=5.0)
        runs = Runs()
        stopped = anyio.Event()

        @app.task
        async def work(n: int) -> int:
            runs.record(current_job().id)
            if n >= 1000 and not stopped.is_set():
                # Held until the server is down, however fast the worker drains: the crash
                # comes mid-run, with jobs running and most still queued.
                await stopped.wait()
            return n

        settled = Settled(monkeypatch, app.backend)
        produced: list[asyncq.Job[int]] = []
        errors: list[tuple[float, asyncq.BrokerError]] = []
        refused = anyio.Event()
        restarted = False
        down_at = up_at = 0.0

        async def produce() -> None:
            """Enqueue one job after another, and read stats, until the server is back."""
            while True:
                try:
                    produced.append(await work.enqueue(-1))
                    await app.queue_stats(["default"])
                except asyncq.BrokerError as exc:  # anything else fails the test
                    errors.append((time.monotonic(), exc))
                    refused.set()
                    await anyio.sleep(0.01)  # a producer's own back-off
                    continue
                if restarted:
                    return

        async with app:
            jobs = await work.enqueue_many([(n,) for n in range(JOBS)])
            async with app.worker(concurrency=50):
                await runs.reached(1000, timeout=30)
                down_at = time.monotonic()
                await anyio.to_thread.run_sync(server.stop, "immediate")
                runs_at_stop = runs.total
                stopped.set()
                async with anyio.create_task_group() as tg:
                    tg.start_soon(produce)
                    with anyio.fail_after(15):
                        await refused.wait()
                    await anyio.sleep(DOWN_FOR)
                    await anyio.to_thread.run_sync(server.start)
                    up_at = time.monotonic()
                    restarted = True
                everything = [*jobs, *produced]
                await settled.all_succeeded([job.id for job in everything], timeout=60)
            found = await statuses(app, everything)
            stats = (await app.queue_stats(["default"]))["default"]
    finally:
        server.remove()
    late = [t - up_at for t, _ in errors if t > up_at]
    print(
        f"{JOBS} jobs, PostgreSQL crashed and restarted: {runs.total} runs, "
        f"{runs.duplicates} duplicate(s); producer: {len(errors)} error(s) while down "
        f"({len(late)} after the restart, the last {max(late, default=0) * 1000:.0f} ms after), "
        f"{len(produced)} job(s) enqueued"
    )
    assert runs_at_stop < JOBS - 1000  # stopped mid-run: most jobs ran after the restart
    assert all(isinstance(exc, asyncq.BrokerUnavailable) for _, exc in errors), errors
    assert all(down_at <= t for t, _ in errors)
    # The pool's connections to the old server are found closed and replaced as they are
    # taken: no error outlives the restart by more than a moment.
    assert max(late, default=0.0) < 0.5, late
    assert produced  # the producer's enqueue worked again once the server was back
    assert set(runs.by_job) == {job.id for job in everything}
    assert found == {JobStatus.SUCCEEDED: len(everything)}  # none lost
    assert (stats.pending, stats.scheduled, stats.running, stats.dead) == (0, 0, 0, 0)


LINGER = 6.0
"""How long after the server the proxy closes each client's socket."""


async def test_a_fast_shutdown_heard_before_the_close_is_broker_unavailable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A fast shutdown ends every session with a ``FATAL`` message, then closes it. A client
    that reads the message on a connection that is not closed yet (here a proxy passes the
    close on late; a loaded machine or a pooler may too) finds asyncpg's protocol in the
    middle of an operation: ``InternalClientError: cannot switch to state 12; another
    operation (2) is in progress``. That is the server gone, like any lost connection: a
    ``BrokerUnavailable`` to the producer, a retry to the worker (which keeps serving), and
    the connection leaves the pool at once, so that once the server is back the next
    enqueues work, though the old sockets are still open."""
    server = PrivatePostgres()
    try:
        server.start()
        proxy = LateClosingProxy(server.port, linger=LINGER)
        url = f"{proxy.url()}?visibility_timeout=2&pool_size=4"
        app = asyncq.App(url, shutdown_timeout=5.0)
        # The producer has a pool of its own, which only its enqueues use: what they leave
        # in it is what they find there next.
        producer = asyncq.App(url)
        runs = Runs()

        @app.task(name="outage.work")
        async def work(n: int) -> int:
            runs.record(current_job().id)
            await anyio.sleep(0.05)  # a batch of settlements is always on its way
            return n

        @producer.task(name="outage.work")
        async def enqueued(n: int) -> int:
            raise AssertionError("the producer runs no jobs")

        settled = Settled(monkeypatch, app.backend)
        errors: list[asyncq.BrokerError] = []
        async with anyio.create_task_group() as tg:
            await tg.start(proxy.serve)
            async with app, producer:
                jobs = await enqueued.enqueue_many([(n,) for n in range(400)])
                async with app.worker(concurrency=10):
                    await runs.reached(50, timeout=30)
                    stopped_at = time.monotonic()
                    await anyio.to_thread.run_sync(server.stop, "fast")
                    # Every session has ended; its socket stays open for LINGER seconds.
                    with pytest.raises(asyncq.BrokerUnavailable):
                        await enqueued.enqueue(-1)
                    await anyio.to_thread.run_sync(server.start)
                    # Back, the old sockets still open: each old connection fails once and
                    # is replaced, rather than failing again and again.
                    later: list[asyncq.Job[int]] = []
                    with anyio.fail_after(stopped_at + LINGER - 1 - time.monotonic()):
                        while len(later) < 10:
                            try:
                                later.append(await enqueued.enqueue(-1))
                            except asyncq.BrokerError as exc:  # anything else fails the test
                                errors.append(exc)
                    everything = [*jobs, *later]
                    await settled.all_succeeded([job.id for job in everything], timeout=60)
                found = await statuses(producer, everything)
            tg.cancel_scope.cancel()
    finally:
        server.remove()
    assert all(isinstance(exc, asyncq.BrokerUnavailable) for exc in errors), errors
    assert len(errors) <= 4, errors  # at most one per connection of the pool
    assert found == {JobStatus.SUCCEEDED: len(everything)}  # none lost


async def test_a_connection_that_failed_is_not_handed_out_again(url: str) -> None:
    """Whatever asyncpg would make of it on release, a pooled connection that raised a
    connection error is closed at once: the next caller gets a new session."""
    app = asyncq.App(f"{url}&pool_size=1")
    async with app:
        database = app.backend._db  # type: ignore[attr-defined]
        with pytest.raises(asyncq.BrokerUnavailable, match="another operation"):
            async with database.connection() as conn:
                failed_pid = conn.get_server_pid()
                # What asyncpg raises on a session the server ended before the socket closed
                # (the test above makes it happen for real).
                raise asyncpg.InternalClientError(
                    "cannot switch to state 12; another operation (2) is in progress"
                )
        async with database.connection() as conn:
            assert conn.get_server_pid() != failed_pid
