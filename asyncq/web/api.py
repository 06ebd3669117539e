"""The JSON API: the data of each page, as :class:`~asyncq.web.data.Reader` gives it, under
``api/`` (documented in the README's dashboard section). Read-only: the pages' forms are the
way to change state."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .context import Dashboard
from .pages import age_param, status_param

__all__ = ["Api"]


def _bad(message: str, status: int = 400) -> Response:
    return JSONResponse({"error": message}, status_code=status)


class Api:
    def __init__(self, dashboard: Dashboard) -> None:
        self.reader = dashboard.reader

    async def overview(self, request: Request) -> Response:
        return JSONResponse(await self.reader.overview())

    async def jobs(self, request: Request) -> Response:
        try:
            status = status_param(request)
        except ValueError as exc:
            return _bad(str(exc))
        data = await self.reader.jobs(
            request.path_params["queue"],
            status,
            task=request.query_params.get("task") or None,
            after=request.query_params.get("after") or None,
        )
        return JSONResponse(data)

    async def job(self, request: Request) -> Response:
        job_id = request.path_params["job_id"]
        data = await self.reader.job(job_id, request.query_params.get("queue") or None)
        if data is None:
            return _bad(f"no job {job_id} (unknown, or its record expired)", 404)
        return JSONResponse(data)

    async def dead_letters(self, request: Request) -> Response:
        try:
            older_than = age_param(request, "older_than")
            newer_than = age_param(request, "newer_than")
        except ValueError as exc:
            return _bad(str(exc))
        data = await self.reader.dead_letters(
            request.path_params["queue"],
            task=request.query_params.get("task") or None,
            older_than=older_than,
            newer_than=newer_than,
            after=request.query_params.get("after") or None,
        )
        return JSONResponse(data)

    async def workers(self, request: Request) -> Response:
        return JSONResponse(await self.reader.workers())

    async def schedules(self, request: Request) -> Response:
        return JSONResponse(await self.reader.schedules())
