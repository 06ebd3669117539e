"""The ``asyncq`` command: run workers, enqueue jobs, and look at queues and dead letters.

Every command takes ``MODULE:APP``, imports that App (see :mod:`asyncq.importer`), and uses
its broker unless ``--broker`` names another. A user mistake is reported as one
``error: ...`` line on stderr with a meaningful exit code, never a traceback; the codes are
listed in ``asyncq --help``.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from functools import partial
from typing import Any, ClassVar, TypeVar

import anyio
import click

from . import __version__
from .app import App
from .errors import AsyncqError, BrokerUnavailable, ConfigurationError
from .importer import import_app
from .job import Job
from .records import DeadLetter, QueueStats, WorkerInfo
from .serializer import DecodeError, Message
from .supervisor import Supervisor

__all__ = ["cli", "main"]

T = TypeVar("T")

log = logging.getLogger("asyncq.cli")

EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

_LOG_FORMAT = "%(asctime)s %(levelname)-7s [%(process)d] %(name)s: %(message)s"

# A replay that fits in one page of the dead-letter queue is over at once; only a longer
# one reports progress while it runs.
_PROGRESS_FROM = 500


class UsageFailure(click.ClickException):
    """A usage or configuration mistake: bad input, an app that cannot be loaded."""

    exit_code: ClassVar[int] = EXIT_USAGE


class Failure(click.ClickException):
    """The command was right but did not succeed: a broker down, a job that failed."""

    exit_code: ClassVar[int] = EXIT_FAILURE


class Interrupted(click.ClickException):
    """Ctrl-C before a worker was there to turn it into a graceful shutdown."""

    exit_code: ClassVar[int] = EXIT_INTERRUPTED


class _Cli(click.Group):
    """Reports every error as one ``error: ...`` line instead of click's usage block."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.NoArgsIsHelpError as exc:
            exc.show()  # the help text itself, not an error
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            click.echo(f"error: {_error_line(exc)}", err=True)
            sys.exit(exc.exit_code)
        except click.Abort as exc:
            if isinstance(exc.__cause__, KeyboardInterrupt):
                click.echo("error: interrupted", err=True)
                sys.exit(EXIT_INTERRUPTED)
            click.echo("error: aborted", err=True)
            sys.exit(EXIT_FAILURE)
        except BrokenPipeError:
            # The reader went away (`asyncq dlq list | head`). Point stdout at /dev/null so
            # the flush at exit does not fail a second time and print a traceback after all.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(EXIT_FAILURE)
        sys.exit(code if isinstance(code, int) else 0)


def _error_line(exc: click.ClickException) -> str:
    message = " ".join(exc.format_message().split())
    if isinstance(exc, click.UsageError) and exc.ctx is not None:
        message += f" (see '{exc.ctx.command_path} --help')"
    return message


# -- parameter types -------------------------------------------------------------------------
class JsonValue(click.ParamType[Any]):
    """A JSON document of one kind: a list (``--args``) or an object (``--kwargs``)."""

    def __init__(self, kind: type[list[Any]] | type[dict[str, Any]]) -> None:
        self.kind = kind
        self.name = "JSON list" if kind is list else "JSON object"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if not isinstance(value, str):
            return value
        try:
            data = json.loads(value)
        except json.JSONDecodeError as exc:
            self.fail(f"not valid JSON ({exc})", param, ctx)
        if not isinstance(data, self.kind):
            example = """'[1, "two"]'""" if self.kind is list else """'{"to": "a@b.c"}'"""
            self.fail(f"expected a {self.name} such as {example}, got {value!r}", param, ctx)
        return data


class QueueNames(click.ParamType[list[str]]):
    """Comma-separated queue names: ``--queues default,emails``."""

    name = "QUEUE,..."

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if not isinstance(value, str):
            return value
        names = [name.strip() for name in value.split(",")]
        if not all(names):
            self.fail(f"expected queue names separated by commas, got {value!r}", param, ctx)
        return names


_app_argument = click.argument("app_spec", metavar="MODULE:APP")
_broker_option = click.option(
    "--broker",
    metavar="URL",
    help="Use this broker instead of the app's, e.g. redis://127.0.0.1:6379/0.",
)
_json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print JSON instead of a table."
)
_queue_filter = click.option(
    "--queue", metavar="QUEUE", help="Only this queue (default: every queue that has dead letters)."
)
_task_filter = click.option("--task", metavar="TASK", help="Only dead letters of this task.")
_id_filter = click.option(
    "--id", "ids", metavar="ID", multiple=True, help="Only this job id; repeat for several."
)


# -- the command group -----------------------------------------------------------------------
@click.group(
    cls=_Cli,
    epilog="""\b
Exit codes:
  0    success; a worker stopped by SIGTERM or SIGINT exits 0 once it has shut down
  1    runtime failure: broker unreachable or failing, a waited-for job failed or
       timed out, a worker process failed
  2    usage or configuration error: bad option or argument, an app that cannot be
       imported, a bad broker URL, an unknown task, bad --args/--kwargs
  130  interrupted (Ctrl-C) before a worker could shut down gracefully""",
)
@click.version_option(
    __version__, "--version", "-V", prog_name="asyncq", message="%(prog)s %(version)s"
)
def cli() -> None:
    """Run and operate asyncq workers.

    MODULE:APP names the asyncq.App to use, imported the way uvicorn imports an app (for
    example 'shop.tasks:app'); the current directory is on the import path. The app's
    broker is used unless --broker names another.
    """


def main() -> None:
    """Entry point of the ``asyncq`` console script and of ``python -m asyncq``."""
    cli.main(prog_name="asyncq")


# -- asyncq run ------------------------------------------------------------------------------
@cli.command(short_help="Run worker processes.")
@_app_argument
@click.option(
    "--concurrency",
    "-c",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="Jobs each worker process runs at the same time.",
)
@click.option(
    "--queues",
    "-q",
    type=QueueNames(),
    help="Queues to consume, comma-separated (default: every queue the app's tasks use).",
)
@click.option("--burst", is_flag=True, help="Exit once the queues are empty instead of waiting.")
@_broker_option
@click.option(
    "--processes",
    "-p",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Worker processes. Above 1, a supervisor starts them, forwards SIGTERM/SIGINT to "
    "them, and restarts any that dies.",
)
@click.option(
    "--shutdown-timeout",
    type=click.FloatRange(min=0),
    metavar="SECONDS",
    help="After SIGTERM/SIGINT, how long in-flight jobs may take to finish before they are "
    "returned to their queue (default: the app's, 30 s). A second signal returns them at once.",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
    default="info",
    show_default=True,
    help="Least severe log level written to stderr.",
)
def run(
    app_spec: str,
    concurrency: int,
    queues: list[str] | None,
    burst: bool,
    broker: str | None,
    processes: int,
    shutdown_timeout: float | None,
    log_level: str,
) -> None:
    """Run a worker: fetch jobs from the app's queues and run them until stopped.

    SIGTERM or SIGINT stops fetching and lets in-flight jobs finish (see
    --shutdown-timeout); jobs still running then go back to their queue, keeping their
    attempt number. The command exits 0 after such a graceful stop.

    \b
    Example:
      asyncq run shop.tasks:app --queues default,emails --concurrency 50 --processes 4
    """
    app = _load_app(app_spec, broker)
    _configure_logging(log_level)
    if shutdown_timeout is None:
        shutdown_timeout = app.shutdown_timeout
    log.info(
        "asyncq %s: app %s with %d task(s), broker %s, %d process(es)",
        __version__,
        app_spec,
        len(app.tasks),
        app.broker_url,
        processes,
    )
    if processes > 1:
        command = _worker_command(
            app_spec, concurrency, queues, burst, broker, shutdown_timeout, log_level
        )
        _supervise(command, processes, shutdown_timeout)
        return
    worker = partial(
        app.run_worker,
        queues=queues,
        concurrency=concurrency,
        burst=burst,
        shutdown_timeout=shutdown_timeout,
        handle_signals=True,
    )
    _run_async(worker)


def _worker_command(
    app_spec: str,
    concurrency: int,
    queues: list[str] | None,
    burst: bool,
    broker: str | None,
    shutdown_timeout: float,
    log_level: str,
) -> list[str]:
    """This same ``asyncq run`` with one process: what each supervised child runs."""
    command = [sys.executable, "-m", "asyncq", "run", app_spec, "--processes", "1"]
    command += ["--concurrency", str(concurrency), "--log-level", log_level]
    command += ["--shutdown-timeout", repr(shutdown_timeout)]
    command += ["--queues", ",".join(queues)] if queues else []
    command += ["--broker", broker] if broker is not None else []
    command += ["--burst"] if burst else []
    return command


def _supervise(command: list[str], processes: int, shutdown_timeout: float) -> None:
    supervisor = Supervisor(
        command, processes, shutdown_timeout=shutdown_timeout, fatal_exit_codes={EXIT_USAGE}
    )
    code = _run_async(supervisor.run)
    if code == EXIT_USAGE:
        raise UsageFailure("a worker process could not start; its error is logged above")
    if code != 0:
        raise Failure("a worker process did not exit cleanly; see the log above")


# -- asyncq enqueue --------------------------------------------------------------------------
@cli.command(short_help="Enqueue a job by task name.")
@_app_argument
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
    "--key",
    metavar="KEY",
    help="Idempotency key: while a job with this key is queued, running, or succeeded "
    "recently, no second one is enqueued and the existing job's id is printed.",
)
@click.option("--queue", metavar="QUEUE", help="Send the job to this queue, not the task's own.")
@click.option("--wait", is_flag=True, help="Wait for the job to finish and print its JSON result.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    metavar="SECONDS",
    help="With --wait: give up waiting after this long (exit 1; the job is not cancelled).",
)
@_broker_option
def enqueue(
    app_spec: str,
    task_name: str,
    job_args: list[Any],
    job_kwargs: dict[str, Any],
    delay: float | None,
    key: str | None,
    queue: str | None,
    wait: bool,
    timeout: float | None,
    broker: str | None,
) -> None:
    """Enqueue one job of TASK (its registered name) and print the job's id.

    \b
    Example:
      asyncq enqueue shop.tasks:app send_email --kwargs '{"to": "ada@example.com"}'
    """
    if timeout is not None and not wait:
        raise click.UsageError("--timeout only applies with --wait")
    app = _load_app(app_spec, broker)
    task = app.tasks.get(task_name)
    if task is None:
        known = ", ".join(sorted(app.tasks)) or "none"
        raise UsageFailure(f"no task named {task_name!r} in {app_spec} (known tasks: {known})")
    problem = task.bind_error(job_args, job_kwargs)
    if problem is not None:
        raise UsageFailure(problem)
    try:
        call = task.options(delay=delay, key=key, queue=queue)
    except ValueError as exc:
        raise UsageFailure(str(exc)) from None

    async def send() -> None:
        async with app:
            try:
                job = await call.enqueue(*job_args, **job_kwargs)
            except TypeError as exc:  # unserialisable arguments; nothing was sent
                raise UsageFailure(str(exc)) from None
            click.echo(job.id)
            if wait:
                result = await _result(job, timeout)
                click.echo(json.dumps(result, default=str))

    _run_async(send)


async def _result(job: Job[Any], timeout: float | None) -> Any:
    try:
        return await job.result(timeout=timeout)
    except TimeoutError:
        status = await job.status()
        raise Failure(f"job {job.id} did not finish within {timeout:g} s; it is {status}") from None


# -- asyncq stats, asyncq workers ------------------------------------------------------------
@cli.command(short_help="Show queue depths.")
@_app_argument
@click.option(
    "--queues",
    type=QueueNames(),
    help="Only these queues, comma-separated (default: the app's and every one the broker knows).",
)
@_json_option
@_broker_option
def stats(app_spec: str, queues: list[str] | None, as_json: bool, broker: str | None) -> None:
    """Show each queue's depth: jobs pending, scheduled (delayed or awaiting a retry),
    running, and dead (in the dead-letter queue)."""
    app = _load_app(app_spec, broker)

    async def fetch() -> dict[str, QueueStats]:
        async with app:
            return await app.queue_stats(queues)

    found = _run_async(fetch)
    if as_json:
        _echo_json({name: _without(asdict(s), "queue") for name, s in found.items()})
        return
    rows = [(s.queue, s.pending, s.scheduled, s.running, s.dead) for s in found.values()]
    _echo_table(("QUEUE", "PENDING", "SCHEDULED", "RUNNING", "DEAD"), rows, numeric={1, 2, 3, 4})


@cli.command(short_help="List live workers.")
@_app_argument
@_json_option
@_broker_option
def workers(app_spec: str, as_json: bool, broker: str | None) -> None:
    """List the live workers: those whose last heartbeat has not expired."""
    app = _load_app(app_spec, broker)

    async def fetch() -> list[WorkerInfo]:
        async with app:
            return await app.backend.workers()

    found = sorted(_run_async(fetch), key=lambda w: w.started_at)
    if as_json:
        _echo_json([asdict(w) for w in found])
        return
    if not found:
        click.echo("no live workers")
        return
    now = time.time()
    rows = [
        (
            w.id,
            ",".join(w.queues),
            w.concurrency,
            w.in_flight,
            _duration(now - w.started_at),
            f"{_duration(now - w.last_seen)} ago",
        )
        for w in found
    ]
    headers = ("WORKER", "QUEUES", "CONCURRENCY", "IN FLIGHT", "UP", "LAST SEEN")
    _echo_table(headers, rows, numeric={2, 3})


# -- asyncq dlq ------------------------------------------------------------------------------
@cli.group(short_help="List, replay or purge dead letters.")
def dlq() -> None:
    """Dead-letter queues: jobs that exhausted their retries, were rejected, or could not
    be run. List them, replay them (back to their queue, with a fresh retry budget), or
    purge them."""


@dlq.command("list", short_help="List dead letters and why they died.")
@_app_argument
@_queue_filter
@_task_filter
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="Show at most this many, oldest first.",
)
@_json_option
@_broker_option
def dlq_list(
    app_spec: str,
    queue: str | None,
    task: str | None,
    limit: int,
    as_json: bool,
    broker: str | None,
) -> None:
    """List dead letters, oldest first, with why each job died."""
    app = _load_app(app_spec, broker)

    async def fetch() -> list[DeadLetter]:
        found: list[DeadLetter] = []
        async with app:
            for name in await _dead_letter_queues(app, queue):
                found += await app.dead_letters(name, limit=limit - len(found), task=task)
                if len(found) >= limit:
                    break
        return found

    found = _run_async(fetch)
    if as_json:
        _echo_json([_dead_letter_json(app, d) for d in found])
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
    _echo_table(("ID", "QUEUE", "TASK", "ATTEMPT", "DIED (UTC)", "ERROR"), rows, numeric={3})


@dlq.command("replay", short_help="Send dead letters back to their queue.")
@_app_argument
@_queue_filter
@_task_filter
@_id_filter
@_broker_option
def dlq_replay(
    app_spec: str, queue: str | None, task: str | None, ids: tuple[str, ...], broker: str | None
) -> None:
    """Send dead letters back to their queue as attempt 1 (a fresh retry budget), then
    remove them from the dead-letter queue. Prints how many were replayed."""
    app = _load_app(app_spec, broker)

    async def replay() -> int:
        total = 0
        async with app:
            for name in await _dead_letter_queues(app, queue):
                progress = partial(_echo_progress, total)
                total += await app.replay_dead(
                    name, ids=ids or None, task=task, on_progress=progress
                )
        return total

    count = _run_async(replay)
    click.echo(f"replayed {count} dead letter(s)")
    _warn_missing(ids, count)


def _echo_progress(earlier: int, done: int) -> None:
    if earlier + done >= _PROGRESS_FROM:
        click.echo(f"... {earlier + done} replayed so far", err=True)


@dlq.command("purge", short_help="Delete dead letters.")
@_app_argument
@_queue_filter
@_task_filter
@_id_filter
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@_broker_option
def dlq_purge(
    app_spec: str,
    queue: str | None,
    task: str | None,
    ids: tuple[str, ...],
    yes: bool,
    broker: str | None,
) -> None:
    """Delete dead letters for good. Asks first, unless --yes is given."""
    app = _load_app(app_spec, broker)
    queues: list[str] | None = None
    if not yes:
        queues, count = _run_async(partial(_count_dead, app, queue, task, ids))
        if count == 0:
            click.echo("no dead letters match; nothing to purge")
            return
        question = f"Permanently delete {count} dead letter(s) from {', '.join(queues)}?"
        try:
            confirmed = click.confirm(question, default=False)
        except click.Abort:  # stdin closed, or Ctrl-C at the question
            confirmed = False
        if not confirmed:
            raise Failure("not confirmed; nothing was purged (--yes skips the question)")

    async def purge() -> int:
        async with app:
            names = queues if queues is not None else await _dead_letter_queues(app, queue)
            total = 0
            for name in names:
                total += await app.purge_dead(name, ids=ids or None, task=task)
            return total

    count = _run_async(purge)
    click.echo(f"purged {count} dead letter(s)")
    _warn_missing(ids, count)


async def _count_dead(
    app: App, queue: str | None, task: str | None, ids: Sequence[str]
) -> tuple[list[str], int]:
    async with app:
        queues = await _dead_letter_queues(app, queue)
        if task is None and not ids:
            stats = await app.queue_stats(queues) if queues else {}
            return queues, sum(s.dead for s in stats.values())
        count = 0
        for name in queues:
            letters = await app.dead_letters(name, limit=2**31, task=task)
            count += sum(1 for d in letters if not ids or d.id in ids)
        return queues, count


async def _dead_letter_queues(app: App, queue: str | None) -> list[str]:
    if queue is not None:
        return [queue]
    return [name for name, s in (await app.queue_stats()).items() if s.dead]


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


# -- shared plumbing -------------------------------------------------------------------------
def _load_app(spec: str, broker: str | None) -> App:
    # The console script's import path starts at its own directory; the user's module is
    # in the working directory (``python -m asyncq`` has it on the path already).
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    try:
        app = import_app(spec)
        if broker is not None:
            app.use_broker(broker)
        _ = app.backend  # resolve the URL now, so a bad one is reported before anything runs
    except ConfigurationError as exc:
        raise UsageFailure(str(exc)) from None
    return app


def _run_async(fn: Callable[[], Awaitable[T]]) -> T:
    """Run ``fn`` on asyncio, turning asyncq's errors into one-line failures."""
    try:
        return anyio.run(fn, backend="asyncio")
    except KeyboardInterrupt:
        raise Interrupted("interrupted") from None
    except Exception as exc:
        failure = _as_failure(exc)
        if failure is None:
            raise  # not a user mistake: a bug, whose traceback is the useful report
        raise failure from None


def _as_failure(exc: BaseException) -> click.ClickException | None:
    # Task groups wrap what they raise; a lone error inside one is still that error.
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    if isinstance(exc, click.ClickException):
        return exc
    if isinstance(exc, ConfigurationError):
        return UsageFailure(str(exc))
    if isinstance(exc, BrokerUnavailable):
        return Failure(f"cannot reach the broker: {exc}")
    if isinstance(exc, AsyncqError):
        return Failure(str(exc))
    return None


def _configure_logging(level: str) -> None:
    # A logging set-up made by the app's own module wins (basicConfig then does nothing);
    # either way, --log-level decides how much asyncq itself says.
    logging.basicConfig(format=_LOG_FORMAT, level=level.upper(), stream=sys.stderr)
    logging.getLogger("asyncq").setLevel(level.upper())


def _echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def _echo_table(
    headers: Sequence[str], rows: Sequence[Sequence[object]], *, numeric: Collection[int] = ()
) -> None:
    cells = [[str(cell) for cell in row] for row in (headers, *rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for row in cells:
        line = "  ".join(
            cell.rjust(width) if i in numeric else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        )
        click.echo(line.rstrip())


def _without(data: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k != key}


def _shorten(text: str, width: int) -> str:
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 3] + "..."


def _duration(seconds: float) -> str:
    seconds = max(int(seconds), 0)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m"
