"""``asyncq job show|result|cancel``: one job, by its id.

A job's record lives with its queue, so the commands take ``--queue``; without it they look
in every queue the app's tasks use and every queue the broker knows, in that order, and use
the first that has the job.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

import click

from ..app import App
from ..errors import JobCancelled, JobFailed
from ..records import JobInfo, JobStatus
from .common import (
    Failure,
    app_argument,
    broker_option,
    echo_json,
    json_option,
    load_app,
    run_async,
)

__all__ = ["job"]

_job_id = click.argument("job_id", metavar="ID")
_queue_option = click.option(
    "--queue",
    metavar="QUEUE",
    help="The job's queue (default: look in every queue the app and the broker know).",
)


@click.group(short_help="Show a job, get its result, or cancel it.")
def job() -> None:
    """One job, by the id `asyncq enqueue` (or `job.id`) gave."""


@job.command("show", short_help="Show a job's record.")
@app_argument
@_job_id
@_queue_option
@json_option
@broker_option
def job_show(
    app_spec: str, job_id: str, queue: str | None, as_json: bool, broker: str | None
) -> None:
    """Show a job's status, attempt, snoozes, progress, next run, last error with its
    traceback, and result."""
    app = load_app(app_spec, broker)

    async def fetch() -> JobInfo:
        async with app:
            return await _find(app, job_id, queue)

    info = run_async(fetch)
    result = _result(app, info)
    if as_json:
        error = info.error
        echo_json(
            {
                "id": info.id,
                "task": info.task,
                "queue": info.queue,
                "status": info.status.value,
                "attempt": info.attempt,
                "snoozes": info.snoozes,
                "eta": info.eta,
                "updated_at": info.updated_at,
                "progress": None
                if info.progress is None
                else {"value": info.progress.value, "message": info.progress.message},
                "result": result,
                "error": None
                if error is None
                else {"type": error.type, "message": error.message, "traceback": error.traceback},
            }
        )
        return
    rows: list[tuple[str, str]] = [
        ("id", info.id),
        ("task", info.task or "?"),
        ("queue", info.queue),
        ("status", info.status.value),
        ("attempt", str(info.attempt)),
    ]
    if info.snoozes:
        rows.append(("snoozes", str(info.snoozes)))
    if info.progress is not None:
        note = f" {info.progress.message}" if info.progress.message else ""
        rows.append(("progress", f"{info.progress.value:.0%}{note}"))
    if info.eta is not None:
        rows.append(("runs at", _when(info.eta)))
    if info.updated_at:
        rows.append(("updated", _when(info.updated_at)))
    if info.status is JobStatus.SUCCEEDED:
        rows.append(("result", json.dumps(result, default=str)))
    if info.error is not None:
        rows.append(("error", str(info.error)))
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        click.echo(f"{name.ljust(width)}  {value}")
    if info.error is not None and info.error.traceback:
        click.echo("traceback:")
        click.echo(info.error.traceback.rstrip())


@job.command("result", short_help="Print a finished job's JSON result.")
@app_argument
@_job_id
@_queue_option
@click.option("--wait", is_flag=True, help="Wait for the job to finish if it has not yet.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    metavar="SECONDS",
    help="With --wait: give up waiting after this long (exit 1; the job goes on).",
)
@broker_option
def job_result(
    app_spec: str,
    job_id: str,
    queue: str | None,
    wait: bool,
    timeout: float | None,
    broker: str | None,
) -> None:
    """Print the JSON result of a job that succeeded. A job that failed, was cancelled or
    has not finished (without --wait) exits 1 and says which."""
    if timeout is not None and not wait:
        raise click.UsageError("--timeout only applies with --wait")
    app = load_app(app_spec, broker)

    async def fetch() -> Any:
        async with app:
            info = await _find(app, job_id, queue)
            if not info.status.finished and not wait:
                raise Failure(
                    f"job {job_id} has not finished: it is {info.status} (--wait waits for it)"
                )
            handle = app.get_job(job_id, info.queue)
            try:
                await handle.result(timeout=timeout)
            except TimeoutError:
                status = await handle.status()
                raise Failure(
                    f"job {job_id} did not finish within {timeout:g} s; it is {status}"
                ) from None
            except (JobFailed, JobCancelled) as exc:
                raise Failure(str(exc)) from None
            return _result(app, await _find(app, job_id, info.queue))

    click.echo(json.dumps(run_async(fetch), default=str))


@job.command("cancel", short_help="Cancel a job.")
@app_argument
@_job_id
@_queue_option
@broker_option
def job_cancel(app_spec: str, job_id: str, queue: str | None, broker: str | None) -> None:
    """Cancel a job: a waiting one never runs; a running one has its handler cancelled by
    the worker that runs it. A job that has already finished exits 1."""
    app = load_app(app_spec, broker)

    async def cancel() -> str:
        async with app:
            info = await _find(app, job_id, queue)
            if not await app.get_job(job_id, info.queue).cancel():
                raise Failure(f"job {job_id} had already finished ({info.status}); nothing to do")
            if info.status is JobStatus.RUNNING:
                return f"job {job_id} is running: its worker has been told to cancel it"
            return f"job {job_id} cancelled; it was {info.status}"

    click.echo(run_async(cancel))


async def _find(app: App, job_id: str, queue: str | None) -> JobInfo:
    queues = [queue] if queue is not None else await app.known_queues()
    for name in queues:
        info = await app.backend.store.job_info(job_id, name)
        if info is not None:
            return info
    where = f"queue {queue}" if queue is not None else f"any of {', '.join(queues)}"
    raise Failure(
        f"no job {job_id} in {where}: never enqueued there, or its record expired "
        "(finished jobs are kept for the result TTL)"
    )


def _result(app: App, info: JobInfo) -> Any:
    """The result as JSON gives it (the command prints JSON, whatever the task returns)."""
    if info.raw_result is None:
        return None
    return app.serializer.loads(info.raw_result)


def _when(epoch: float) -> str:
    moment = datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")
    delta = epoch - time.time()
    relative = f"in {delta:.1f} s" if delta >= 0 else f"{-delta:.1f} s ago"
    return f"{moment} ({relative})"
