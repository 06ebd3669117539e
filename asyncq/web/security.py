"""The dashboard's defences: CSRF tokens for every state-changing POST, the security headers
of every response, and the HTTP Basic check ``asyncq web --basic-auth`` puts in front.

CSRF: a random per-browser value in an ``HttpOnly``, ``SameSite=Strict`` cookie, and in each
form an HMAC of it under the dashboard's secret. A POST passes when its form's token is the
HMAC of its cookie. Nothing is kept on the server, so several dashboard processes behind a
load balancer accept each other's tokens once they share ``csrf_secret``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

__all__ = [
    "CSRF_COOKIE",
    "CSRF_FIELD",
    "SECURITY_HEADERS",
    "BasicAuth",
    "Csrf",
    "with_security_headers",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

CSRF_COOKIE = "asyncq_csrf"
CSRF_FIELD = "csrf"

SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        b"connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (b"cache-control", b"no-store"),
)
"""No inline script or style may run (job data cannot become code), and no other site may
frame the pages (no clickjacking of the replay and purge buttons)."""


class Csrf:
    def __init__(self, secret: str | bytes | None) -> None:
        if secret is None:
            secret = secrets.token_bytes(32)  # this process only: tokens die with it
        self._key = secret.encode() if isinstance(secret, str) else secret

    @staticmethod
    def new_cookie() -> str:
        return secrets.token_urlsafe(24)

    def token(self, cookie: str) -> str:
        return hmac.new(self._key, cookie.encode(), hashlib.sha256).hexdigest()

    def valid(self, cookie: str | None, token: str | None) -> bool:
        if not cookie or not token:
            return False
        return hmac.compare_digest(self.token(cookie), token)


def with_security_headers(app: ASGIApp) -> ASGIApp:
    """``app`` with :data:`SECURITY_HEADERS` on every HTTP response."""

    async def secured(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return

        async def send_secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                extra = [h for h in SECURITY_HEADERS if h[0] not in present]
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await app(scope, receive, send_secured)

    return secured


class BasicAuth:
    """HTTP Basic in front of an ASGI app: one user name and password; the user name goes
    into the scope (``scope["asyncq.user"]``) for the dashboard's log of who did what."""

    def __init__(self, app: ASGIApp, user: str, password: str, realm: str = "asyncq") -> None:
        self.app = app
        self._expected = f"{user}:{password}".encode()
        self.user = user
        self._challenge = f'Basic realm="{realm}", charset="UTF-8"'.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self._allowed(scope):
            scope["asyncq.user"] = self.user
            await self.app(scope, receive, send)
            return
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"www-authenticate", self._challenge),
                    (b"content-type", b"text/plain; charset=utf-8"),
                    *SECURITY_HEADERS,
                ],
            }
        )
        await send({"type": "http.response.body", "body": b"authentication required\n"})

    def _allowed(self, scope: Scope) -> bool:
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                scheme, _, encoded = value.partition(b" ")
                if scheme.lower() != b"basic":
                    return False
                try:
                    given = base64.b64decode(encoded.strip(), validate=True)
                except (binascii.Error, ValueError):
                    return False
                return hmac.compare_digest(given, self._expected)
        return False
