"""``asyncq web``: serve an App's dashboard (:mod:`asyncq.web`) on its own, with uvicorn.

Standalone, the server's lifespan opens the App (mounted in a host's server, the host does).
It listens on 127.0.0.1 unless told otherwise; anywhere else without ``--basic-auth`` or
``--read-only``, it warns that anyone who reaches the port can replay and purge."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import MutableMapping
from contextlib import AsyncExitStack
from typing import Any

import click

from ..app import App
from .common import UsageFailure, app_argument, broker_option, load_app

log = logging.getLogger("asyncq.web")

_AUTH_ENV = "ASYNCQ_WEB_BASIC_AUTH"
_SECRET_ENV = "ASYNCQ_WEB_CSRF_SECRET"


def _credentials(raw: str | None) -> tuple[str, str] | None:
    if raw is None:
        return None
    user, sep, password = raw.partition(":")
    if not sep or not user or not password:
        raise UsageFailure(
            "--basic-auth (or $ASYNCQ_WEB_BASIC_AUTH) must be USER:PASSWORD, both non-empty"
        )
    return user, password


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Served:
    """The dashboard with a lifespan that opens the App for as long as the server runs."""

    def __init__(self, app: App, dashboard: Any) -> None:
        self.app, self.dashboard = app, dashboard
        self._stack = AsyncExitStack()

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            await self.dashboard(scope, receive, send)
            return
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self._stack.enter_async_context(self.app)
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self._stack.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return


@click.command(short_help="Serve the web dashboard.")
@app_argument
@broker_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    default=8181,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="0: any free one.",
)
@click.option("--read-only", is_flag=True, help="Show everything, change nothing (POSTs get 403).")
@click.option(
    "--basic-auth",
    metavar="USER:PASSWORD",
    envvar=_AUTH_ENV,
    help=f"Require HTTP Basic with these credentials (or set ${_AUTH_ENV}, so they do not "
    "show in ps).",
)
@click.option(
    "--csrf-secret",
    metavar="SECRET",
    envvar=_SECRET_ENV,
    help=f"Key of the forms' CSRF tokens, the same on every process behind one load "
    f"balancer (or ${_SECRET_ENV}; default: random per process).",
)
@click.option(
    "--hide-data", is_flag=True, help="Show job arguments, headers and results as (hidden)."
)
def web(
    app_spec: str,
    broker: str | None,
    host: str,
    port: int,
    read_only: bool,
    basic_auth: str | None,
    csrf_secret: str | None,
    hide_data: bool,
) -> None:
    """Serve MODULE:APP's dashboard: queues, jobs, dead letters, workers and schedules.

    Open http://HOST:PORT/ in a browser; the JSON API is under /api/.
    """
    try:
        import uvicorn

        from ..web import create_dashboard
        from ..web.security import BasicAuth
    except ImportError as exc:
        raise UsageFailure(
            f"the dashboard needs its extra ({exc.name} is missing): pip install 'asyncq[web]'"
        ) from None
    credentials = _credentials(basic_auth)
    app = load_app(app_spec, broker, in_process_note="the dashboard shows only this process")
    dashboard: Any = create_dashboard(
        app, read_only=read_only, show_data=not hide_data, csrf_secret=csrf_secret
    )
    if credentials is not None:
        dashboard = BasicAuth(dashboard, *credentials)
    if not _loopback(host) and credentials is None and not read_only:
        click.echo(
            f"warning: serving on {host} with neither --basic-auth nor --read-only: anyone "
            "who reaches this port can replay, purge and cancel jobs",
            err=True,
        )
    config = uvicorn.Config(
        _Served(app, dashboard), host=host, port=port, log_level="warning", lifespan="on"
    )
    # Bound before the line below is printed, so whoever reads it can connect at once (and
    # --port 0 prints the port it got).
    try:
        sock = config.bind_socket()
    except (OSError, SystemExit):
        raise UsageFailure(f"--port: cannot listen on {host}:{port}") from None
    bound = sock.getsockname()[1]
    click.echo(
        f"asyncq dashboard of {app.describe_broker()} on http://{host}:{bound}/"
        + (" (read-only)" if read_only else ""),
        err=True,
    )
    uvicorn.Server(config).run(sockets=[sock])
