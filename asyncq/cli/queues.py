"""``asyncq enqueue``, ``asyncq stats`` and ``asyncq workers``: put a job on a queue, and
look at the queues and the workers that consume them."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from datetime import datetime
from typing import Any

import click

from ..errors import MessageTooLarge, TaskNotFound
from ..job import Job
from ..records import Progress, QueueStats, WorkerInfo
from .common import (
    Failure,
    JsonValue,
    QueueNames,
    UsageFailure,
    app_argument,
    broker_option,
    echo_json,
    echo_table,
    json_option,
    load_app,
    note_in_process,
    run_async,
)


class Moment(click.ParamType[float]):
    """A point in time: ISO 8601 with a time zone, or epoch seconds; as epoch seconds."""

    name = "TIME"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, float):
            return value
        text = str(value).strip()
        try:
            return float(text)
        except ValueError:
            pass
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            self.fail(
                f"{value!r} is neither an ISO 8601 time (2026-12-24T18:00:00+01:00) nor "
                "epoch seconds",
                param,
                ctx,
            )
        if moment.tzinfo is None:
            self.fail(
                f"{value!r} has no time zone: add one (+01:00, or Z for UTC), so it means "
                "the same on every machine",
                param,
                ctx,
            )
        return moment.timestamp()


# -- asyncq enqueue --------------------------------------------------------------------------
@click.command(short_help="Enqueue a job by task name.")
@app_argument
@click.argument("task_name", metavar="TASK")
@click.option(
    "--args",
    "job_args",
    type=JsonValue(list),
    default="[]",
    show_default=True,
    help="Positional arguments of the task, as a JSON list.",
)
@click.option(
    "--kwargs",
    "job_kwargs",
    type=JsonValue(dict),
    default="{}",
    show_default=True,
    help="Keyword arguments of the task, as a JSON object.",
)
@click.option(
    "--delay",
    type=click.FloatRange(min=0),
    metavar="SECONDS",
    help="Run the job no earlier than this many seconds from now.",
)
@click.option(
    "--at",
    "at",
    type=Moment(),
    metavar="TIME",
    help="Run the job no earlier than TIME: ISO 8601 with a time zone "
    "(2026-12-24T18:00:00+01:00, or ...Z for UTC), or seconds since the epoch.",
)
@click.option(
    "--key",
    metavar="KEY",
    help="Idempotency key: while a job with this key is queued, running, or succeeded "
    "recently, no second one is enqueued and the existing job's id is printed.",
)
@click.option("--queue", metavar="QUEUE", help="Send the job to this queue, not the task's own.")
@click.option(
    "--priority",
    type=int,
    metavar="N",
    help="Priority 0..9 (higher runs first) instead of the task's own.",
)
@click.option(
    "--wait",
    is_flag=True,
    help="Wait for the job to finish and print its JSON result; progress the job reports "
    "is shown on stderr meanwhile.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    metavar="SECONDS",
    help="With --wait: give up waiting after this long (exit 1; the job is not cancelled).",
)
@broker_option
def enqueue(
    app_spec: str,
    task_name: str,
    job_args: list[Any],
    job_kwargs: dict[str, Any],
    delay: float | None,
    at: float | None,
    key: str | None,
    queue: str | None,
    priority: int | None,
    wait: bool,
    timeout: float | None,
    broker: str | None,
) -> None:
    """Enqueue one job of TASK (its registered name) and print the job's id.

    \b
    Example:
      asyncq enqueue shop.tasks:app shop.tasks.send_email --kwargs '{"to": "ada@example.com"}'

    TASK is the name the task was registered under: by default "module.function" (as
    `shop.tasks.send_email` above), or the name= given to @app.task.
    """
    if timeout is not None and not wait:
        raise click.UsageError("--timeout only applies with --wait")
    if delay is not None and at is not None:
        raise click.UsageError("give --delay or --at, not both")
    app = load_app(app_spec, broker, in_process_note=None)
    try:
        task = app.get_task(task_name)
    except TaskNotFound as exc:
        raise UsageFailure(f"{app_spec}: {exc}") from None
    problem = task.bind_error(job_args, job_kwargs)
    if problem is not None:
        raise UsageFailure(problem)
    try:
        call = task.options(delay=delay, at=at, key=key, queue=queue, priority=priority)
    except ValueError as exc:
        raise UsageFailure(str(exc)) from None
    if wait and app.backend.in_process:
        raise UsageFailure(
            f"--wait on {app.broker_url} would wait forever: no worker shares this "
            "command's in-process broker"
        )

    async def send() -> None:
        async with app:
            try:
                job = await call.enqueue(*job_args, **job_kwargs)
            except (TypeError, MessageTooLarge) as exc:  # nothing was sent
                raise UsageFailure(str(exc)) from None
            click.echo(job.id)
            note_in_process(app, "no worker can ever run this job")
            if wait:
                result = await _result(job, timeout)
                click.echo(json.dumps(result, default=str))

    run_async(send)


async def _result(job: Job[Any], timeout: float | None) -> Any:
    """Wait for the job's result, saying on stderr how far it is whenever its handler
    reports progress."""
    deadline = None if timeout is None else time.monotonic() + timeout
    shown: Progress | None = None
    while True:
        left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
        # Progress is a value on the record, not an event: it is read between waits.
        step = _PROGRESS_LOOK if left is None else min(_PROGRESS_LOOK, left)
        try:
            return await job.result(timeout=step)
        except TimeoutError:
            info = await job.info()
            if deadline is not None and time.monotonic() >= deadline:
                raise Failure(
                    f"job {job.id} did not finish within {timeout:g} s; it is {info.status}"
                ) from None
        if info.progress is not None and info.progress != shown:
            shown = info.progress
            note = f" {shown.message}" if shown.message else ""
            click.echo(f"job {job.id} {info.status}: {shown.value:.0%}{note}", err=True)


_PROGRESS_LOOK = 0.5
"""Seconds between looks at a waited-for job's progress."""


# -- asyncq stats, asyncq workers ------------------------------------------------------------
@click.command(short_help="Show queue depths.")
@app_argument
@click.option(
    "--queues",
    type=QueueNames(),
    help="Only these queues, comma-separated (default: the app's and every one the broker knows).",
)
@json_option
@broker_option
def stats(app_spec: str, queues: list[str] | None, as_json: bool, broker: str | None) -> None:
    """Show each queue's depth: jobs pending, scheduled (delayed or awaiting a retry),
    running, and dead (in the dead-letter queue); its lag, how long the oldest pending job
    has waited ("-" where the broker cannot tell: RabbitMQ); and how many live workers
    serve it ("-" where the broker keeps no heartbeats). A queue with pending jobs and no
    live worker is marked: nothing will run them."""
    app = load_app(app_spec, broker)

    async def fetch() -> tuple[dict[str, QueueStats], list[WorkerInfo] | None]:
        async with app:
            # A backend without a record store keeps no heartbeats: the workers are unknown.
            available = app.backend.store.available
            live = await app.operations.workers() if available else None
            return await app.queue_stats(queues), live

    found, live = run_async(fetch)
    # On stderr, so --json stays one document: a producer started from another directory,
    # on another file, shows here.
    click.echo(f"broker: {app.describe_broker()}", err=True)
    serving: dict[str, int | None] = {
        name: None if live is None else sum(name in w.queues for w in live) for name in found
    }
    unserved = [name for name, s in found.items() if s.pending and serving[name] == 0]
    if as_json:
        echo_json(
            {
                name: {**_without(asdict(s), "queue"), "workers": serving[name]}
                for name, s in found.items()
            }
        )
    else:
        rows = [
            (
                s.queue,
                s.pending,
                s.scheduled,
                s.running,
                s.dead,
                "-" if s.oldest_pending_age is None else _duration(s.oldest_pending_age),
                "-" if serving[s.queue] is None else serving[s.queue],
                "pending, no live worker" if s.queue in unserved else "",
            )
            for s in found.values()
        ]
        headers = ("QUEUE", "PENDING", "SCHEDULED", "RUNNING", "DEAD", "LAG", "WORKERS", "NOTE")
        echo_table(headers, rows, numeric={1, 2, 3, 4, 5, 6})
    for name in unserved:
        click.echo(
            f"warning: {name} has {found[name].pending} pending job(s) and no live worker "
            "serving it",
            err=True,
        )


@click.command(short_help="List live workers, and those gone.")
@app_argument
@click.option("--live", "live_only", is_flag=True, help="Only the live workers.")
@json_option
@broker_option
def workers(app_spec: str, live_only: bool, as_json: bool, broker: str | None) -> None:
    """List the workers: the live ones (their last heartbeat has not expired), then those
    gone within the last hour (killed, crashed or hung: they missed their heartbeats and did
    not deregister, as a stopping worker does; UP is then how long they ran). The broker
    hands a gone worker's jobs to the others."""
    app = load_app(app_spec, broker)

    async def fetch() -> list[WorkerInfo]:
        async with app:
            return await app.operations.workers(include_gone=not live_only)

    found = sorted(run_async(fetch), key=lambda w: (w.gone, w.started_at))
    if as_json:
        echo_json([asdict(w) for w in found])
        return
    if not found:
        click.echo("no live workers")
        return
    now = time.time()
    rows = [
        (
            w.id,
            "gone" if w.gone else "live",
            ",".join(w.queues),
            w.concurrency,
            w.in_flight,
            # A gone worker was up from its start until its last heartbeat.
            _duration((w.last_seen if w.gone else now) - w.started_at),
            f"{_duration(now - w.last_seen)} ago",
        )
        for w in found
    ]
    headers = ("WORKER", "STATE", "QUEUES", "CONCURRENCY", "IN FLIGHT", "UP", "LAST SEEN")
    echo_table(headers, rows, numeric={3, 4})
    live = sum(not w.gone for w in found)
    click.echo(f"{live} live, {len(found) - live} gone", err=True)


def _without(data: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k != key}


def _duration(seconds: float) -> str:
    seconds = max(int(seconds), 0)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m"
