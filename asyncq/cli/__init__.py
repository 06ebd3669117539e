"""The ``asyncq`` command: run workers, enqueue jobs, and look at queues and dead letters.

Every command takes ``MODULE:APP``, imports that App (see :mod:`asyncq.importer`), and uses
its broker unless ``--broker`` names another. A user mistake is reported as one
``error: ...`` line on stderr with a meaningful exit code, never a traceback; the codes are
listed in ``asyncq --help``.

The group is defined here; the commands live in :mod:`.run` (``run``), :mod:`.queues`
(``enqueue``, ``stats``, ``workers``), :mod:`.dlq` (``dlq``), :mod:`.jobs` (``job``) and
:mod:`.queue_ops` (``queue``), :mod:`.schedules` (``schedules``), :mod:`.web` (``web``),
and what they share in
:mod:`.common`.
"""

from __future__ import annotations

import click

from .. import __version__
from . import db, dlq, jobs, queue_ops, queues, run, schedules, web
from .common import CliGroup

__all__ = ["cli", "main"]


@click.group(
    cls=CliGroup,
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


cli.add_command(run.run)
cli.add_command(queues.enqueue)
cli.add_command(queues.stats)
cli.add_command(queues.workers)
cli.add_command(dlq.dlq)
cli.add_command(jobs.job)
cli.add_command(queue_ops.queue)
cli.add_command(schedules.schedules)
cli.add_command(db.db)
cli.add_command(web.web)


def main() -> None:
    """Entry point of the ``asyncq`` console script and of ``python -m asyncq``."""
    cli.main(prog_name="asyncq")
