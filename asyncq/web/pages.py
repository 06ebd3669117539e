"""The dashboard's HTML pages (GET), each rendered from :class:`~asyncq.web.data.Reader`'s
data for the same URL's JSON (see :mod:`asyncq.web.api`)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from ..records import LISTABLE, JobStatus
from .context import Dashboard

__all__ = ["Pages", "age_param", "parse_age"]


def age_param(request: Request, name: str) -> float | None:
    """An age filter of the query string, in seconds (``older_than=3600``); bad ones raise
    ``ValueError`` with the parameter's name."""
    return parse_age(name, request.query_params.get(name))


def parse_age(name: str, raw: str | None) -> float | None:
    """An age in seconds from a query string or a form; None when empty."""
    if raw is None or raw.strip() == "":
        return None
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number of seconds, not {raw!r}") from None
    if not value >= 0 or value == float("inf"):
        raise ValueError(f"{name} must be a number of seconds >= 0, not {raw!r}")
    return value


def status_param(request: Request) -> JobStatus:
    raw = request.query_params.get("status") or JobStatus.QUEUED.value
    try:
        status = JobStatus(raw)
    except ValueError:
        status = None
    if status not in LISTABLE:
        allowed = ", ".join(s.value for s in LISTABLE)
        raise ValueError(f"status must be one of {allowed}, not {raw!r}")
    assert status is not None
    return status


class Pages:
    def __init__(self, dashboard: Dashboard) -> None:
        self.d = dashboard

    async def overview(self, request: Request) -> Response:
        data = await self.d.reader.overview()
        return self.d.render(request, "overview.html", page="overview", data=data)

    async def overview_fragment(self, request: Request) -> Response:
        """The overview's live part, fetched again every few seconds by the page's script."""
        data = await self.d.reader.overview()
        return self.d.render(request, "overview_live.html", page="overview", data=data)

    async def queue(self, request: Request) -> Response:
        queue = request.path_params["queue"]
        try:
            status = status_param(request)
        except ValueError as exc:
            return self.d.render(request, "error.html", 400, page="queue", message=str(exc))
        task = request.query_params.get("task") or None
        data = await self.d.reader.jobs(
            queue, status, task=task, after=request.query_params.get("after") or None
        )
        stats = (await self.d.app.queue_stats([queue]))[queue]
        return self.d.render(
            request,
            "queue.html",
            page="queue",
            data=data,
            stats=stats,
            statuses=[s.value for s in LISTABLE],
        )

    async def job(self, request: Request) -> Response:
        job_id = request.path_params["job_id"]
        queue = request.query_params.get("queue") or None
        data = await self.d.reader.job(job_id, queue)
        if data is None:
            return self.d.render(
                request,
                "error.html",
                404,
                page="job",
                message=f"no job {job_id} in {'queue ' + queue if queue else 'any queue'} "
                "(unknown, or its record expired)",
            )
        return self.d.render(request, "job.html", page="job", job=data)

    async def find(self, request: Request) -> Response:
        job_id = (request.query_params.get("id") or "").strip()
        if not job_id:
            return self.d.render(request, "error.html", 400, page="find", message="give a job id")
        return RedirectResponse(self.d.href(request, f"/jobs/{job_id}"), status_code=303)

    async def dead_letters(self, request: Request) -> Response:
        queue = request.path_params["queue"]
        try:
            older_than = age_param(request, "older_than")
            newer_than = age_param(request, "newer_than")
        except ValueError as exc:
            return self.d.render(request, "error.html", 400, page="dead", message=str(exc))
        data = await self.d.reader.dead_letters(
            queue,
            task=request.query_params.get("task") or None,
            older_than=older_than,
            newer_than=newer_than,
            after=request.query_params.get("after") or None,
        )
        return self.d.render(request, "dead.html", page="dead", data=data)

    async def dead_queues(self, request: Request) -> Response:
        data = await self.d.reader.overview()
        return self.d.render(request, "dead_queues.html", page="dead", data=data)

    async def workers(self, request: Request) -> Response:
        data = await self.d.reader.workers()
        return self.d.render(request, "workers.html", page="workers", data=data)

    async def schedules(self, request: Request) -> Response:
        data = await self.d.reader.schedules()
        return self.d.render(request, "schedules.html", page="schedules", data=data)
