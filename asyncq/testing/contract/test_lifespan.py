"""``@app.lifespan``: entered once per worker before it runs jobs, left after the last one;
what it puts on ``app.state`` the handlers see."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import pytest

import asyncq
from asyncq.backend import Outcome
from asyncq.testing import Recorded, SettleLog

pytestmark = pytest.mark.anyio


async def test_lifespan_wraps_job_processing_once_per_worker(
    app: asyncq.App, settled: SettleLog, recorded: Recorded
) -> None:
    events: list[str] = []

    @app.lifespan
    async def lifespan(app: asyncq.App) -> AsyncIterator[None]:
        events.append("enter")
        app.state.greeting = "hello"
        yield
        events.append("exit")

    @app.task
    async def greet(name: str) -> str:
        events.append(f"job {name}")
        greeting: str = app.state.greeting
        return f"{greeting}, {name}"

    async with app:
        async with app.worker(concurrency=1):
            for name in ("ada", "bob"):
                job = await greet.enqueue(name)
                assert await settled.wait(job.id) == [Outcome.SUCCEEDED]
                await recorded.result(job, f"hello, {name}")
            assert events == ["enter", "job ada", "job bob"]
        assert events == ["enter", "job ada", "job bob", "exit"]


async def test_each_worker_enters_the_lifespan(app: asyncq.App) -> None:
    entered, exited = 0, 0
    both_in = anyio.Event()

    @app.lifespan
    async def lifespan(app: asyncq.App) -> AsyncIterator[None]:
        nonlocal entered, exited
        entered += 1
        if entered == 2:
            both_in.set()
        yield
        exited += 1

    async with app:
        async with app.worker(concurrency=1), app.worker(concurrency=1):
            with anyio.fail_after(5):
                await both_in.wait()
            assert (entered, exited) == (2, 0)
        assert (entered, exited) == (2, 2)
