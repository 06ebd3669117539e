"""``asyncq dlq list|replay|purge``: look at dead letters, send them back, or delete them."""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import asdict
from datetime import UTC, datetime
from functools import partial
from typing import Any

import click

from ..app import App
from ..records import DeadLetter, DeadLetterFilter
from ..serializer import DecodeError, Message
from .common import (
    Failure,
    UsageFailure,
    app_argument,
    broker_option,
    echo_json,
    echo_table,
    json_option,
    load_app,
    run_async,
)

# A replay that fits in one page of the dead-letter queue is over at once; only a longer
# one reports progress while it runs.
_PROGRESS_FROM = 500

_queue_filter = click.option(
    "--queue", metavar="QUEUE", help="Only this queue (default: every queue that has dead letters)."
)
_task_filter = click.option("--task", metavar="TASK", help="Only dead letters of this task.")


class Age(click.ParamType[float]):
    """A duration: seconds, or a number with s, m, h or d (``90``, ``15m``, ``2h``, ``7d``)."""

    name = "AGE"
    _UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, float):
            return value
        text = str(value).strip().lower()
        scale = self._UNITS.get(text[-1:], None)
        number = text[:-1] if scale is not None else text
        try:
            seconds = float(number) * (scale or 1)
        except ValueError:
            seconds = -1.0
        if not seconds >= 0 or seconds == float("inf"):
            self.fail(f"{value!r} is not an age such as 90, 30s, 15m, 2h or 7d", param, ctx)
        return seconds


def _age_filters(command: Callable[..., Any]) -> Callable[..., Any]:
    command = click.option(
        "--newer-than",
        type=Age(),
        metavar="AGE",
        help="Only those that died less than AGE ago (90, 30s, 15m, 2h, 7d).",
    )(command)
    return click.option(
        "--older-than",
        type=Age(),
        metavar="AGE",
        help="Only those that died more than AGE ago (90, 30s, 15m, 2h, 7d).",
    )(command)


_id_filter = click.option(
    "--id", "ids", metavar="ID", multiple=True, help="Only this job id; repeat for several."
)


@click.group(short_help="List, replay or purge dead letters.")
def dlq() -> None:
    """Dead-letter queues: jobs that exhausted their retries, were rejected, or could not
    be run. List them, replay them (back to their queue, with a fresh retry budget), or
    purge them."""


@dlq.command("list", short_help="List dead letters and why they died.")
@app_argument
@_queue_filter
@_task_filter
@_age_filters
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="Show at most this many, oldest first.",
)
@json_option
@broker_option
def dlq_list(
    app_spec: str,
    queue: str | None,
    task: str | None,
    older_than: float | None,
    newer_than: float | None,
    limit: int,
    as_json: bool,
    broker: str | None,
) -> None:
    """List dead letters, oldest first, with why each job died."""
    app = load_app(app_spec, broker)
    _note_unknown_task(app, task)

    async def fetch() -> list[DeadLetter]:
        match = DeadLetterFilter(task=task, older_than=older_than, newer_than=newer_than)
        async with app:
            return await app.operations.dead_letters(queue, match, limit)

    found = run_async(fetch)
    if as_json:
        echo_json([_dead_letter_json(app, d) for d in found])
        return
    if not found:
        click.echo(f"no dead letters in {queue or 'any queue'}")
        return
    rows = [
        (
            d.id,
            d.queue,
            d.task or "?",
            _dead_attempt(app, d) or "?",
            datetime.fromtimestamp(d.died_at, UTC).strftime("%Y-%m-%d %H:%M:%S"),
            _shorten(str(d.error), 80),
        )
        for d in found
    ]
    echo_table(("ID", "QUEUE", "TASK", "ATTEMPT", "DIED (UTC)", "ERROR"), rows, numeric={3})


@dlq.command("replay", short_help="Send dead letters back to their queue.")
@app_argument
@_queue_filter
@_task_filter
@_age_filters
@_id_filter
@broker_option
def dlq_replay(
    app_spec: str,
    queue: str | None,
    task: str | None,
    older_than: float | None,
    newer_than: float | None,
    ids: tuple[str, ...],
    broker: str | None,
) -> None:
    """Send dead letters back to their queue as attempt 1 (a fresh retry budget), then
    remove them from the dead-letter queue. Prints how many were replayed."""
    app = load_app(app_spec, broker)
    if task is not None and task not in app.tasks:
        known = ", ".join(sorted(app.tasks)) or "none"
        raise UsageFailure(
            f"{app_spec}: no task named {task!r} (known tasks: {known}); its jobs would die "
            f"again as UnknownTask. To delete its dead letters: asyncq dlq purge {app_spec} "
            f"--task {task}"
        )

    async def replay() -> int:
        match = DeadLetterFilter(ids or None, task, older_than, newer_than)
        async with app:
            return await app.operations.replay_dead(
                queue, match, on_progress=partial(_echo_progress, "replayed")
            )

    count = run_async(replay)
    click.echo(f"replayed {count} dead letter(s)")
    _warn_missing(ids, count)


def _note_unknown_task(app: App, task: str | None) -> None:
    """A --task the app does not have may be a typo, or a task since removed whose dead
    letters remain: say so, and match by the name anyway."""
    if task is not None and task not in app.tasks:
        known = ", ".join(sorted(app.tasks)) or "none"
        click.echo(
            f"note: the app has no task named {task!r} (known tasks: {known}); matching dead "
            "letters by that name anyway",
            err=True,
        )


def _echo_progress(verb: str, done: int, earlier: int = 0) -> None:
    if earlier + done >= _PROGRESS_FROM:
        click.echo(f"... {earlier + done} {verb} so far", err=True)


@dlq.command("purge", short_help="Delete dead letters.")
@app_argument
@_queue_filter
@_task_filter
@_age_filters
@_id_filter
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@broker_option
def dlq_purge(
    app_spec: str,
    queue: str | None,
    task: str | None,
    older_than: float | None,
    newer_than: float | None,
    ids: tuple[str, ...],
    yes: bool,
    broker: str | None,
) -> None:
    """Delete dead letters for good. Asks first, unless --yes is given."""
    app = load_app(app_spec, broker)
    _note_unknown_task(app, task)
    match = DeadLetterFilter(ids or None, task, older_than, newer_than)
    queues: list[str | None] = [queue]
    if not yes:
        found, count = run_async(partial(_count_dead, app, queue, match))
        if count == 0:
            click.echo("no dead letters match; nothing to purge")
            return
        question = f"Permanently delete {count} dead letter(s) from {', '.join(found)}?"
        try:
            confirmed = click.confirm(question, default=False)
        except click.Abort:  # stdin closed, or Ctrl-C at the question
            confirmed = False
        if not confirmed:
            raise Failure("not confirmed; nothing was purged (--yes skips the question)")
        queues = list(found)  # exactly the queues the question named

    async def purge() -> int:
        total = 0
        async with app:
            for name in queues:
                progress = partial(_echo_progress, "purged", earlier=total)
                total += await app.operations.purge_dead(name, match, on_progress=progress)
        return total

    count = run_async(purge)
    click.echo(f"purged {count} dead letter(s)")
    _warn_missing(ids, count)


async def _count_dead(
    app: App, queue: str | None, match: DeadLetterFilter
) -> tuple[list[str], int]:
    async with app:
        return await app.operations.count_dead(queue, match)


def _warn_missing(ids: Collection[str], count: int) -> None:
    missing = len(set(ids)) - count
    if ids and missing > 0:
        click.echo(f"warning: {missing} of the given ids are not dead letters here", err=True)


def _dead_letter_json(app: App, dead: DeadLetter) -> dict[str, Any]:
    message = _decode(app, dead)
    return {
        "id": dead.id,
        "queue": dead.queue,
        "task": dead.task,
        "attempt": message.attempt if message else None,
        "args": list(message.args) if message else None,
        "kwargs": message.kwargs if message else None,
        "died_at": dead.died_at,
        "error": asdict(dead.error),
    }


def _dead_attempt(app: App, dead: DeadLetter) -> int | None:
    message = _decode(app, dead)
    return message.attempt if message else None


def _decode(app: App, dead: DeadLetter) -> Message | None:
    try:
        return Message.decode(dead.body, app.serializer)
    except DecodeError:
        return None  # dead-lettered because it could not be decoded


def _shorten(text: str, width: int) -> str:
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 3] + "..."
