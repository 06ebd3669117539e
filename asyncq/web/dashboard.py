"""``create_dashboard``: the dashboard as an ASGI app (Starlette) for one asyncq App.

Mount it in any ASGI server or framework, under any prefix (its links follow the ASGI
``root_path``), behind the host's own authentication; it has no lifespan of its own, so
the host opens the App (``async with app`` in its lifespan). ``asyncq web`` serves it alone.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ..app import App
from ..errors import BrokerError
from .actions import Actions
from .api import Api
from .context import Dashboard
from .data import DataOptions, Reader
from .pages import Pages
from .security import ASGIApp, Csrf, with_security_headers

__all__ = ["create_dashboard"]

_STATIC = Path(__file__).parent / "static"


def create_dashboard(
    app: App,
    *,
    read_only: bool = False,
    show_data: bool = True,
    csrf_secret: str | bytes | None = None,
    actor: Callable[[Request], str | None] | None = None,
) -> ASGIApp:
    """The dashboard of ``app``'s broker, as an ASGI app.

    ``read_only``: no buttons, and every POST is refused with 403. ``show_data=False``: job
    arguments, headers and results show as ``(hidden)`` (personal data). ``csrf_secret``:
    the key of the CSRF tokens; give every process behind one load balancer the same one
    (default: a random key of this process). ``actor``: who is asking, for the log of
    replays, purges and cancels (default: the Basic user of ``asyncq web``, else an
    authenticated ASGI ``scope["user"]``, else the client's address).
    """
    reader = Reader(app, DataOptions(show_data=show_data))
    dashboard = Dashboard.build(
        app, reader, read_only=read_only, csrf=Csrf(csrf_secret), actor=actor
    )
    pages, actions, api = Pages(dashboard), Actions(dashboard), Api(dashboard)

    async def broker_error(request: Request, exc: Exception) -> Response:
        message = f"the broker did not answer: {exc}"
        if request.url.path.startswith(f"{request.scope.get('root_path', '')}/api/"):
            return JSONResponse({"error": message}, status_code=503)
        return dashboard.render(request, "error.html", 503, page="", message=message)

    routes = [
        Route("/", pages.overview),
        Route("/live/overview", pages.overview_fragment),
        Route("/queues/{queue}", pages.queue),
        Route("/jobs/{job_id}", pages.job),
        Route("/jobs/{job_id}/cancel", actions.cancel_job, methods=["POST"]),
        Route("/jobs/{job_id}/run-now", actions.run_job_now, methods=["POST"]),
        Route("/find", pages.find),
        Route("/dead", pages.dead_queues),
        Route("/dead/{queue}", pages.dead_letters),
        Route("/dead/{queue}/replay", actions.replay_dead, methods=["POST"]),
        Route("/dead/{queue}/purge", actions.purge_dead, methods=["POST"]),
        Route("/workers", pages.workers),
        Route("/schedules", pages.schedules),
        Route("/schedules/{name}/{action}", actions.schedule_action, methods=["POST"]),
        Route("/api/overview", api.overview),
        Route("/api/queues/{queue}/jobs", api.jobs),
        Route("/api/jobs/{job_id}", api.job),
        Route("/api/dead/{queue}", api.dead_letters),
        Route("/api/workers", api.workers),
        Route("/api/schedules", api.schedules),
        Mount("/static", StaticFiles(directory=_STATIC), name="static"),
    ]
    starlette = Starlette(routes=routes, exception_handlers={BrokerError: broker_error})
    return with_security_headers(starlette)
