"""Registering periodic jobs: what ``@app.periodic`` and ``app.schedule`` accept, and the
one-line error for what they refuse (leaving nothing registered)."""

from __future__ import annotations

import pytest

import asyncq
from asyncq.periodic import trigger
from asyncq.worker_options import WorkerOptions


def test_periodic_registers_a_task_and_its_schedule_under_one_name(unique: str) -> None:
    app = asyncq.App(f"memory://{unique}")

    @app.periodic("*/5 * * * *", name="cleanup", timezone="Europe/Berlin", queue="ops")
    async def cleanup() -> None: ...

    schedule = app.schedules["cleanup"]
    assert app.tasks["cleanup"] is cleanup
    assert (schedule.task, schedule.cron, schedule.timezone) == (
        "cleanup",
        "*/5 * * * *",
        "Europe/Berlin",
    )
    assert schedule.queue == cleanup.queue == "ops"


def test_schedule_fires_an_existing_task_with_arguments(unique: str) -> None:
    app = asyncq.App(f"memory://{unique}")

    @app.task(name="report")
    async def report(kind: str, *, day: int = 1) -> None: ...

    schedule = app.schedule(report, every=30, args=("daily",), kwargs={"day": 2}, name="r")
    assert (schedule.every, schedule.args, dict(schedule.kwargs)) == (30.0, ("daily",), {"day": 2})
    with pytest.raises(ValueError, match="a schedule named 'r' is already registered"):
        app.schedule(report, every=60, args=("weekly",), name="r")
    with pytest.raises(ValueError, match="schedule 'report': its arguments do not fit"):
        app.schedule(report, every=60)


def test_a_refused_periodic_leaves_no_task_behind(unique: str) -> None:
    app = asyncq.App(f"memory://{unique}")
    with pytest.raises(ValueError, match="bad cron expression"):

        @app.periodic("61 * * * *", name="broken")
        async def broken() -> None: ...

    with pytest.raises(ValueError, match="its arguments do not fit"):

        @app.periodic(every=5, name="needs_args")  # type: ignore[arg-type]
        async def needs_args(n: int) -> None: ...

    assert app.tasks == {} and app.schedules == {}


def test_overlap_false_is_kept_on_the_schedule(unique: str) -> None:
    app = asyncq.App(f"memory://{unique}")

    @app.periodic(every=5, name="long", overlap=False)
    async def long() -> None: ...

    assert app.schedules["long"].overlap is False


@pytest.mark.anyio
async def test_triggering_an_unknown_schedule_names_the_known_ones(unique: str) -> None:
    app = asyncq.App(f"memory://{unique}")

    @app.periodic(every=5, name="tick")
    async def tick() -> None: ...

    with pytest.raises(KeyError, match="no schedule named 'tock'.*its schedules: tick"):
        await trigger(app, "tock")


def test_no_schedules_travels_to_a_supervised_worker() -> None:
    assert "--no-schedules" in WorkerOptions(schedules=False).command_line()
    assert "--no-schedules" not in WorkerOptions().command_line()
