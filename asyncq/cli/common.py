"""What every ``asyncq`` command shares: exit codes and the errors that carry them, the
group class that prints them as one line, parameter types and options, loading the app,
running a coroutine, and the output helpers."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Any, ClassVar, TypeVar

import anyio
import click

from ..app import App
from ..errors import AsyncqError, BrokerUnavailable, ConfigurationError
from ..importer import import_app
from ..joblog import JsonFormatter

T = TypeVar("T")

EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

_LOG_FORMAT = "%(asctime)s %(levelname)-7s [%(process)d] %(name)s: %(message)s"


# -- errors and how they are reported --------------------------------------------------------
class UsageFailure(click.ClickException):
    """A usage or configuration mistake: bad input, an app that cannot be loaded."""

    exit_code: ClassVar[int] = EXIT_USAGE


class Failure(click.ClickException):
    """The command was right but did not succeed: a broker down, a job that failed."""

    exit_code: ClassVar[int] = EXIT_FAILURE


class Interrupted(click.ClickException):
    """Ctrl-C before a worker was there to turn it into a graceful shutdown."""

    exit_code: ClassVar[int] = EXIT_INTERRUPTED


class CliGroup(click.Group):
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


# -- options every command group uses --------------------------------------------------------
app_argument = click.argument("app_spec", metavar="MODULE:APP")
broker_option = click.option(
    "--broker",
    metavar="URL",
    help="Use this broker instead of the app's, e.g. redis://127.0.0.1:6379/0.",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")


# -- loading the app and running it ----------------------------------------------------------
IN_PROCESS_NOTE = (
    "warning: {url} is an in-process broker: {what}; name a shared broker with --broker URL "
    "or $ASYNCQ_BROKER (e.g. redis://127.0.0.1:6379/0)"
)


def load_app(spec: str, broker: str | None, *, in_process_note: str | None = "") -> App:
    """Import the App named by ``spec`` (on ``broker`` if given) and resolve its broker.

    On an in-process broker (``memory://``) the command could only see or do what it does
    itself, which is never what a user of the command line means: say so on stderr,
    always (see :func:`note_in_process`); ``in_process_note`` says what this command
    misses, and None leaves the note to the command, once it has checked its input."""
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
    if in_process_note is not None:
        note_in_process(app, in_process_note)
    return app


def note_in_process(app: App, what: str = "") -> None:
    """Warn on stderr when ``app``'s broker lives inside this process; ``what`` says what
    that means for the command."""
    if app.backend.in_process:
        what = what or "this command sees only what it does itself"
        click.echo(IN_PROCESS_NOTE.format(url=app.broker_url, what=what), err=True)


def run_async(fn: Callable[[], Awaitable[T]]) -> T:
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


def configure_logging(level: str, log_format: str = "text") -> None:
    """Log to stderr, as text or one JSON object per line (``--log-format json``)."""
    # A logging set-up made by the app's own module wins (basicConfig then does nothing);
    # either way, --log-level decides how much asyncq itself says.
    handler = logging.StreamHandler(sys.stderr)
    formatter = JsonFormatter() if log_format == "json" else logging.Formatter(_LOG_FORMAT)
    handler.setFormatter(formatter)
    logging.basicConfig(level=level.upper(), handlers=[handler])
    logging.getLogger("asyncq").setLevel(level.upper())


# -- output ----------------------------------------------------------------------------------
def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def echo_table(
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
