"""``asyncq db upgrade``: apply the broker's schema migrations, or print them
(``--dry-run``) for teams that run migrations themselves (a ``postgresql://`` broker;
brokers with no schema to migrate say so)."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import click

from .common import UsageFailure, app_argument, broker_option, load_app, run_async

__all__ = ["db"]


@runtime_checkable
class Migrating(Protocol):
    """A backend with a schema of its own to migrate."""

    async def pending_migrations(self) -> str: ...

    async def upgrade_schema(self) -> int: ...


@click.group(short_help="The broker's database schema.")
def db() -> None:
    """The schema a database broker keeps its tables in (postgresql://)."""


@db.command("upgrade", short_help="Apply (or print) the schema's migrations.")
@app_argument
@click.option("--dry-run", is_flag=True, help="Print the SQL; change nothing.")
@broker_option
def db_upgrade(app_spec: str, dry_run: bool, broker: str | None) -> None:
    """Bring the broker's schema to this asyncq's version. Workers do this by themselves
    when they start, unless the URL says migrate=false; --dry-run prints the SQL (one
    transaction, under the same advisory lock the workers take) and changes nothing."""
    app = load_app(app_spec, broker, in_process_note=None)
    backend = app.backend
    if not isinstance(backend, Migrating):
        raise UsageFailure(
            f"the {backend.system or type(backend).__name__} broker has no schema to "
            "migrate: db upgrade is for postgresql://"
        )
    if dry_run:
        sql = run_async(backend.pending_migrations)
        click.echo(sql if sql else "-- the schema is up to date: nothing to apply", nl=not sql)
        return
    applied = run_async(backend.upgrade_schema)
    click.echo(f"applied {applied} migration(s)" if applied else "the schema is up to date")
