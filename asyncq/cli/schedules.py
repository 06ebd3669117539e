"""``asyncq schedules``: list an App's periodic schedules with their next and last slots, and
pause, resume or trigger one.

``asyncq schedules MODULE:APP`` is short for ``asyncq schedules list MODULE:APP``."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import click

from ..app import App
from ..periodic import ScheduleReport, report, trigger
from .common import (
    UsageFailure,
    app_argument,
    broker_option,
    echo_json,
    echo_table,
    json_option,
    load_app,
    run_async,
)


class _ListByDefault(click.Group):
    """A group whose first argument, when it names no subcommand, is ``list``'s MODULE:APP."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["list", *args]
        return super().parse_args(ctx, args)


@click.group(cls=_ListByDefault, short_help="List, pause, resume or trigger periodic schedules.")
def schedules() -> None:
    """List an App's periodic schedules (`asyncq schedules MODULE:APP`), or pause, resume or
    trigger one of them. Pausing and resuming hold for every worker of the broker, until
    changed; a paused schedule's slots pass without running."""


def _needs_store(app: App, spec: str) -> None:
    if not app.backend.store.available:
        raise UsageFailure(
            f"{spec}: {app.broker_url} keeps no job records, and schedules need them "
            "(their slots are claimed there)"
        )


def _schedule_named(app: App, spec: str, name: str) -> None:
    if name not in app.schedules:
        known = ", ".join(sorted(app.schedules)) or "none"
        raise UsageFailure(f"{spec}: no schedule named {name!r} (its schedules: {known})")


def _when(moment: datetime | None) -> str:
    return "-" if moment is None else moment.isoformat(timespec="seconds")


def _as_json(found: ScheduleReport) -> dict[str, Any]:
    s = found.schedule
    return {
        "name": s.name,
        "task": s.task,
        "cron": s.cron,
        "every": s.every,
        "timezone": s.timezone,
        "queue": s.queue,
        "catch_up": s.catch_up,
        "overlap": s.overlap,
        "paused": found.paused,
        "next_slot": found.next_slot.isoformat(),
        "last_slot": None if found.last_slot is None else found.last_slot.isoformat(),
        "last_job": found.last_job,
        "last_status": None if found.last_status is None else str(found.last_status),
    }


@schedules.command("list", short_help="List the App's schedules.")
@app_argument
@json_option
@broker_option
def list_schedules(app_spec: str, as_json: bool, broker: str | None) -> None:
    """List the App's schedules: name, task, cron or every, time zone, next slot, last fired
    slot and the status of its job ("-" where none was fired, or its record expired), and
    whether the schedule is paused. Times are in UTC."""
    app = load_app(app_spec, broker)
    _needs_store(app, app_spec)

    async def fetch() -> list[ScheduleReport]:
        async with app:
            return [await report(app, s) for s in app.schedules.values()]

    found = run_async(fetch)
    if as_json:
        echo_json([_as_json(f) for f in found])
        return
    if not found:
        click.echo(f"{app_spec} has no schedules")
        return
    rows = [
        (
            f.schedule.name,
            f.schedule.task,
            f.schedule.cron or f"every {f.schedule.every:g} s",
            f.schedule.timezone,
            _when(f.next_slot),
            _when(f.last_slot),
            "-" if f.last_status is None else str(f.last_status),
            "paused" if f.paused else "",
        )
        for f in found
    ]
    headers = ("SCHEDULE", "TASK", "WHEN", "TIMEZONE", "NEXT", "LAST", "LAST STATUS", "")
    echo_table(headers, rows)


def _pausing(paused: bool) -> click.Command:
    verb = "pause" if paused else "resume"

    @schedules.command(verb, short_help=f"{verb.capitalize()} a schedule on every worker.")
    @app_argument
    @click.argument("name", metavar="NAME")
    @broker_option
    def command(app_spec: str, name: str, broker: str | None) -> None:
        app = load_app(app_spec, broker)
        _needs_store(app, app_spec)
        _schedule_named(app, app_spec, name)

        async def change() -> None:
            async with app:
                await app.backend.store.pause_schedule(name, paused)

        run_async(change)
        click.echo(f"schedule {name} {'paused' if paused else 'resumed'}")

    command.help = (
        "Pause schedule NAME: no worker fires its slots until it is resumed; slots passed "
        "meanwhile are not run later (unless catch_up fires the last one)."
        if paused
        else "Resume schedule NAME: workers fire its slots again from the next one."
    )
    return command


pause = _pausing(True)
resume = _pausing(False)


@schedules.command("trigger", short_help="Run a schedule's job now.")
@app_argument
@click.argument("name", metavar="NAME")
@broker_option
def trigger_schedule(app_spec: str, name: str, broker: str | None) -> None:
    """Enqueue schedule NAME's job now, outside its slots, and print the job's id. Its
    slots are not affected: the next one runs as planned."""
    app = load_app(app_spec, broker)
    _schedule_named(app, app_spec, name)

    async def send() -> str:
        async with app:
            job = await trigger(app, name)
            return job.id

    click.echo(run_async(send))
