"""Sync (``def``) handlers run in a worker thread, never on the event loop's thread."""

from __future__ import annotations

import threading

import pytest

import asyncq
from asyncq import current_job
from asyncq.backend import Outcome
from asyncq.testing import Recorded, SettleLog

pytestmark = pytest.mark.anyio


async def test_sync_handler_runs_in_a_worker_thread(
    app: asyncq.App, settled: SettleLog, recorded: Recorded
) -> None:
    returned: list[dict[str, int | str]] = []
    async_threads: list[int] = []

    @app.task
    def blocking(a: int, b: int) -> dict[str, int | str]:
        returned.append({"sum": a + b, "thread": threading.get_ident(), "job": current_job().id})
        return returned[-1]

    @app.task
    async def non_blocking() -> int:
        async_threads.append(threading.get_ident())
        return async_threads[-1]

    loop_thread = threading.get_ident()
    async with app, app.worker(concurrency=2):
        job = await blocking.enqueue(2, 3)
        assert await settled.wait(job.id) == [Outcome.SUCCEEDED]
        other = await non_blocking.enqueue()
        assert await settled.wait(other.id) == [Outcome.SUCCEEDED]
        (result,) = returned
        await recorded.result(job, result)
        await recorded.result(other, loop_thread)
    assert result["sum"] == 5
    assert result["thread"] != loop_thread
    assert result["job"] == job.id
    assert async_threads == [loop_thread]


async def test_sync_handler_failure_is_retried(
    app: asyncq.App, settled: SettleLog, recorded: Recorded
) -> None:
    attempts: list[int] = []

    @app.task(retries=1)
    def flaky() -> str:
        attempts.append(current_job().attempt)
        if len(attempts) == 1:
            raise OSError("disk busy")
        return "ok"

    async with app, app.worker(concurrency=1):
        job = await flaky.enqueue()
        assert await settled.wait(job.id, 2) == [Outcome.RETRY, Outcome.SUCCEEDED]
        await recorded.result(job, "ok")
    assert attempts == [1, 2]
