"""``asyncq queue purge|remove``: empty a queue of its waiting jobs, or remove a queue that
nothing uses any more."""

from __future__ import annotations

from functools import partial

import click

from .common import (
    Failure,
    UsageFailure,
    app_argument,
    broker_option,
    load_app,
    run_async,
)

__all__ = ["queue"]

_name = click.argument("name", metavar="NAME")
_yes = click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")

# A purge that fits in one batch is over at once; only a longer one reports progress.
_PROGRESS_FROM = 1000


@click.group(short_help="Purge or remove a queue.")
def queue() -> None:
    """Whole queues: purge the jobs waiting in one, or remove one nothing uses."""


@queue.command("purge", short_help="Cancel every job waiting in a queue.")
@app_argument
@_name
@_yes
@broker_option
def queue_purge(app_spec: str, name: str, yes: bool, broker: str | None) -> None:
    """Cancel every job waiting in queue NAME: queued, delayed, or waiting for a retry.
    They never run and their status becomes cancelled. Jobs running now finish; dead
    letters stay (see `asyncq dlq purge`). Asks first unless given --yes."""
    app = load_app(app_spec, broker)

    async def count() -> int:
        async with app:
            (stats,) = (await app.queue_stats([name])).values()
            return stats.pending + stats.scheduled

    waiting = run_async(count)
    if not waiting:
        click.echo(f"no jobs waiting in {name}")
        return
    if not yes and not click.confirm(
        f"Cancel the {waiting} job(s) waiting in {name}? They will not run.", default=False
    ):
        raise Failure("not confirmed; nothing was purged (--yes skips the question)")

    async def purge() -> int:
        async with app:
            progress = partial(_echo_progress, waiting)
            return await app.purge_queue(name, on_progress=progress)

    click.echo(f"purged {run_async(purge)} job(s) from {name}")


@queue.command("remove", short_help="Remove a queue that nothing uses.")
@app_argument
@_name
@_yes
@broker_option
def queue_remove(app_spec: str, name: str, yes: bool, broker: str | None) -> None:
    """Remove queue NAME from the broker: only a queue with no jobs at all (pending,
    scheduled, running or dead) that no live worker serves. Asks first unless given --yes."""
    app = load_app(app_spec, broker)
    if not yes and not click.confirm(f"Remove queue {name} from the broker?", default=False):
        raise Failure("not confirmed; nothing was removed (--yes skips the question)")

    async def remove() -> None:
        async with app:
            if name not in await app.known_queues():
                raise UsageFailure(f"no queue named {name!r} is known to the app or the broker")
            try:
                await app.remove_queue(name)
            except ValueError as exc:
                raise Failure(str(exc)) from None

    run_async(remove)
    click.echo(f"removed queue {name}")


def _echo_progress(total: int, done: int) -> None:
    if total > _PROGRESS_FROM:
        click.echo(f"purged {done} of about {total} job(s)...", err=True)
