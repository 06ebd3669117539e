"""Sync (``def``) handlers run in a worker thread, never on the event loop's thread."""

from __future__ import annotations

import threading

import pytest

import asyncq
from asyncq import current_job

pytestmark = [pytest.mark.anyio, pytest.mark.needs_store]


async def test_sync_handler_runs_in_a_worker_thread(app: asyncq.App) -> None:
    @app.task
    def blocking(a: int, b: int) -> dict[str, int | str]:
        return {"sum": a + b, "thread": threading.get_ident(), "job": current_job().id}

    @app.task
    async def non_blocking() -> int:
        return threading.get_ident()

    loop_thread = threading.get_ident()
    async with app, app.worker(concurrency=2):
        job = await blocking.enqueue(2, 3)
        result = await job.result(timeout=5)
        async_thread = await (await non_blocking.enqueue()).result(timeout=5)
    assert result["sum"] == 5
    assert result["thread"] != loop_thread
    assert result["job"] == job.id
    assert async_thread == loop_thread


async def test_sync_handler_failure_is_retried(app: asyncq.App) -> None:
    attempts: list[int] = []

    @app.task(retries=1)
    def flaky() -> str:
        attempts.append(current_job().attempt)
        if len(attempts) == 1:
            raise OSError("disk busy")
        return "ok"

    async with app, app.worker(concurrency=1):
        assert await (await flaky.enqueue()).result(timeout=5) == "ok"
    assert attempts == [1, 2]
