"""The dashboard's state-changing requests: POSTs only, each with a valid CSRF token, none
in read-only mode (403). Replays and purges ask for a confirmation first (a page that shows
what they will touch and posts again with ``confirm=yes``), and are logged with who did what
(logger ``asyncq.web``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import wraps

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from ..periodic import trigger
from ..records import DeadLetterFilter
from .context import Dashboard, Form, log
from .pages import parse_age
from .security import CSRF_COOKIE, CSRF_FIELD

__all__ = ["Actions"]

Handler = Callable[["Actions", Request, Form], Awaitable[Response]]


def guarded(handler: Handler) -> Callable[[Actions, Request], Awaitable[Response]]:
    """Refuse in read-only mode and without a valid CSRF token; hand the form on."""

    @wraps(handler)
    async def checked(self: Actions, request: Request) -> Response:
        d = self.d
        if d.read_only:
            return d.render(
                request, "error.html", 403, page="", message="this dashboard is read-only"
            )
        try:
            form = await Form.read(request)
        except ValueError as exc:
            return d.render(request, "error.html", 413, page="", message=str(exc))
        if not d.csrf.valid(request.cookies.get(CSRF_COOKIE), form.get(CSRF_FIELD)):
            return d.render(
                request,
                "error.html",
                403,
                page="",
                message="the form's CSRF token is missing or stale: reload the page and try again",
            )
        try:
            return await handler(self, request, form)
        except ValueError as exc:
            return d.render(request, "error.html", 400, page="", message=str(exc))

    return checked


class Actions:
    def __init__(self, dashboard: Dashboard) -> None:
        self.d = dashboard

    def _back(self, request: Request, path: str, note: str, **query: str | None) -> Response:
        return RedirectResponse(self.d.href(request, path, note=note, **query), status_code=303)

    # -- jobs ------------------------------------------------------------------------------
    @guarded
    async def cancel_job(self, request: Request, form: Form) -> Response:
        job_id = request.path_params["job_id"]
        queue = form.get("queue") or self.d.app.default_queue
        cancelled = await self.d.app.get_job(job_id, queue).cancel()
        log.warning("dashboard: %s cancelled job %s (queue %s)", self.d.who(request), job_id, queue)
        note = "cancelled" if cancelled else "it had already finished: nothing to cancel"
        return self._back(request, f"/jobs/{job_id}", note, queue=queue)

    @guarded
    async def run_job_now(self, request: Request, form: Form) -> Response:
        job_id = request.path_params["job_id"]
        queue = form.get("queue") or self.d.app.default_queue
        if not self.d.app.backend.can_run_now:
            raise ValueError(f"{self.d.app.describe_broker()} cannot move a waiting job forward")
        moved = await self.d.app.backend.run_now(queue, job_id)
        log.warning("dashboard: %s ran job %s now (queue %s)", self.d.who(request), job_id, queue)
        note = "due now: the next worker takes it" if moved else "it was not waiting: unchanged"
        return self._back(request, f"/jobs/{job_id}", note, queue=queue)

    # -- dead letters ----------------------------------------------------------------------
    @guarded
    async def replay_dead(self, request: Request, form: Form) -> Response:
        return await self._dead_action(request, form, "replay")

    @guarded
    async def purge_dead(self, request: Request, form: Form) -> Response:
        return await self._dead_action(request, form, "purge")

    async def _dead_action(self, request: Request, form: Form, action: str) -> Response:
        queue = request.path_params["queue"]
        ids = form.all("ids")
        matching = form.get("scope") == "matching"
        if not ids and not matching:
            raise ValueError("select dead letters first, or choose every one that matches")
        task = form.get("task") or None
        older_than = parse_age("older_than", form.get("older_than"))
        newer_than = parse_age("newer_than", form.get("newer_than"))
        if matching:
            match = DeadLetterFilter(task=task, older_than=older_than, newer_than=newer_than)
        else:
            match = DeadLetterFilter(ids=ids)
        operations = self.d.app.operations
        if form.get("confirm") != "yes":
            _, count = await operations.count_dead(queue, match)
            return self.d.render(
                request,
                "confirm.html",
                page="dead",
                action=action,
                queue=queue,
                ids=ids,
                matching=matching,
                task=task,
                older_than=older_than,
                newer_than=newer_than,
                count=count,
            )
        if action == "replay":
            done = await operations.replay_dead(queue, match)
            verb = "replayed"
        else:
            done = await operations.purge_dead(queue, match)
            verb = "purged"
        what = (
            f"every dead letter matching task={task} older_than={older_than} "
            f"newer_than={newer_than}"
            if matching
            else f"ids {', '.join(ids)}"
        )
        log.warning(
            "dashboard: %s %s %d dead letter(s) of queue %s: %s",
            self.d.who(request),
            verb,
            done,
            queue,
            what,
        )
        return self._back(request, f"/dead/{queue}", f"{verb} {done} dead letter(s)")

    # -- schedules -------------------------------------------------------------------------
    @guarded
    async def schedule_action(self, request: Request, form: Form) -> Response:
        name, action = request.path_params["name"], request.path_params["action"]
        app = self.d.app
        if name not in app.schedules:
            raise ValueError(f"no schedule named {name!r}")
        if action in ("pause", "resume"):
            await app.backend.store.pause_schedule(name, action == "pause")
            note = f"{name} {action}d"
        elif action == "trigger":
            job = await trigger(app, name)
            note = f"{name} triggered: job {job.id}"
        else:
            raise ValueError(f"unknown schedule action {action!r} (pause, resume, trigger)")
        log.warning("dashboard: %s: schedule %s: %s", self.d.who(request), name, action)
        return self._back(request, "/schedules", note)
