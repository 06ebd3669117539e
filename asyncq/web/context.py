"""What every handler of one dashboard shares: the App and its reader, the settings, the
templates, and the request helpers (links under the mount's ``root_path``, the CSRF cookie,
who is asking)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlencode

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from ..app import App
from .data import Reader
from .security import CSRF_COOKIE, CSRF_FIELD, Csrf

__all__ = ["Dashboard", "Form"]

log = logging.getLogger("asyncq.web")

_MAX_FORM = 1 << 20  # bytes: a form of a page's job ids is a few KB


class Form:
    """A POSTed ``application/x-www-form-urlencoded`` form (parsed here, so the dashboard
    needs no multipart parser)."""

    def __init__(self, fields: dict[str, list[str]]) -> None:
        self._fields = fields

    @classmethod
    async def read(cls, request: Request) -> Form:
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > _MAX_FORM:
                raise ValueError("form too large")
        return cls(parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True))

    def get(self, name: str) -> str | None:
        values = self._fields.get(name)
        return values[0] if values else None

    def all(self, name: str) -> list[str]:
        return [v for v in self._fields.get(name, []) if v]


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _ago(ts: float | None, now: float | None = None) -> str:
    if ts is None:
        return "-"
    return _duration((now or time.time()) - ts) + (" ago" if (now or time.time()) >= ts else "")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = abs(seconds)
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=repr)


@dataclass
class Dashboard:
    app: App
    reader: Reader
    read_only: bool
    csrf: Csrf
    actor: Callable[[Request], str | None] | None
    templates: jinja2.Environment

    @classmethod
    def build(
        cls,
        app: App,
        reader: Reader,
        *,
        read_only: bool,
        csrf: Csrf,
        actor: Callable[[Request], str | None] | None,
    ) -> Dashboard:
        env = jinja2.Environment(
            loader=jinja2.PackageLoader("asyncq.web", "templates"),
            autoescape=True,  # job data is user data: everything is escaped unless marked
        )
        env.filters.update(when=_when, ago=_ago, duration=_duration, pretty=_pretty)
        return cls(app, reader, read_only, csrf, actor, env)

    # -- requests --------------------------------------------------------------------------
    @staticmethod
    def href(request: Request, path: str, **query: Any) -> str:
        """``path`` under the mount point, with ``query`` (None values left out)."""
        root = request.scope.get("root_path", "").rstrip("/")
        shown = {k: v for k, v in query.items() if v is not None and v != ""}
        return f"{root}{path}" + (f"?{urlencode(shown)}" if shown else "")

    def who(self, request: Request) -> str:
        """Who is asking, for the log of replays and purges: the hook's answer, else the
        Basic user, else an authenticated ASGI user, else the client's address."""
        if self.actor is not None:
            named = self.actor(request)
            if named:
                return named
        user = request.scope.get("asyncq.user")
        if user:
            return str(user)
        scope_user = request.scope.get("user")
        if scope_user is not None and getattr(scope_user, "is_authenticated", False):
            return str(getattr(scope_user, "display_name", scope_user))
        client = request.client
        return f"{client.host}:{client.port}" if client else "unknown"

    def render(
        self, request: Request, template: str, status_code: int = 200, **values: Any
    ) -> Response:
        cookie = request.cookies.get(CSRF_COOKIE)
        fresh = cookie is None
        if fresh:
            cookie = Csrf.new_cookie()
        assert cookie is not None
        page = self.templates.get_template(template).render(
            request=request,
            href=lambda path, **query: self.href(request, path, **query),
            read_only=self.read_only,
            can_run_now=self.app.backend.can_run_now,
            csrf_field=CSRF_FIELD,
            csrf_token=self.csrf.token(cookie),
            broker=self.app.describe_broker(),
            now=time.time(),
            **values,
        )
        response = HTMLResponse(page, status_code=status_code)
        if fresh:
            root = request.scope.get("root_path", "") or "/"
            response.set_cookie(
                CSRF_COOKIE,
                cookie,
                httponly=True,
                samesite="strict",
                path=root,
                secure=request.url.scheme == "https",
            )
        return response
