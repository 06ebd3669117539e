"""Enqueue -> run -> result: the round trip, and the shapes a result can take."""

from __future__ import annotations

from typing import Any

import pytest

import asyncq
from asyncq.backend import Outcome
from asyncq.testing import Recorded, SettleLog

pytestmark = pytest.mark.anyio


@pytest.mark.needs_store
async def test_enqueue_returns_a_job_whose_result_is_the_return_value(app: asyncq.App) -> None:
    @app.task
    async def add(a: int, b: int) -> int:
        return a + b

    async with app, app.worker(concurrency=2):
        job = await add.enqueue(1, 2)
        assert isinstance(job, asyncq.Job)
        assert isinstance(job.id, str) and job.id
        assert await job.result(timeout=5) == 3
        assert await job.status() is asyncq.JobStatus.SUCCEEDED
        # The result stays readable after the job finished, from a fresh handle too.
        assert await app.get_job(job.id).result(timeout=5) == 3


@pytest.mark.needs_store
@pytest.mark.parametrize(
    "value",
    [None, {"a": 1, "nested": {"b": [1, 2]}}, [1, "two", None, 3.5], "text", 0, False],
    ids=["none", "dict", "list", "str", "zero", "false"],
)
async def test_result_types_round_trip(app: asyncq.App, value: Any) -> None:
    @app.task
    async def echo(v: Any) -> Any:
        return v

    async with app, app.worker(concurrency=1):
        job = await echo.enqueue(value)
        assert await job.result(timeout=5) == value
        assert await job.status() is asyncq.JobStatus.SUCCEEDED


async def test_keyword_arguments_reach_the_handler(
    app: asyncq.App, settled: SettleLog, recorded: Recorded
) -> None:
    greeted: list[str] = []

    @app.task
    async def greet(name: str, *, greeting: str = "hello") -> str:
        greeted.append(f"{greeting}, {name}")
        return greeted[-1]

    async with app, app.worker(concurrency=1):
        for job, expected in (
            (await greet.enqueue("ada", greeting="hi"), "hi, ada"),
            (await greet.enqueue(name="bob"), "hello, bob"),
        ):
            assert await settled.wait(job.id) == [Outcome.SUCCEEDED]
            await recorded.result(job, expected)
    assert greeted == ["hi, ada", "hello, bob"]


@pytest.mark.needs_store
async def test_result_times_out_while_no_worker_runs_the_job(app: asyncq.App) -> None:
    @app.task
    async def noop() -> None:
        pass

    async with app:
        job = await noop.enqueue()
        with pytest.raises(TimeoutError):
            await job.result(timeout=0.1)
        assert await job.status() is asyncq.JobStatus.QUEUED


@pytest.mark.needs_store
async def test_unknown_job_id_is_job_not_found(app: asyncq.App) -> None:
    async with app:
        job = app.get_job("0" * 32)
        with pytest.raises(asyncq.JobNotFound):
            await job.status()
        with pytest.raises(asyncq.JobNotFound):
            await job.result(timeout=1)


async def test_enqueue_outside_an_open_app_is_a_clear_error(app: asyncq.App) -> None:
    @app.task
    async def noop() -> None:
        pass

    with pytest.raises(RuntimeError, match="not open"):
        await noop.enqueue()


def test_get_task_names_the_known_tasks(app: asyncq.App) -> None:
    @app.task(name="resize")
    async def resize(path: str) -> None:
        pass

    assert app.get_task("resize") is resize
    with pytest.raises(asyncq.TaskNotFound, match="no task named 'crop'.*known tasks: resize"):
        app.get_task("crop")
