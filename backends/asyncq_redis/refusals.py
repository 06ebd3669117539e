"""Redis refusing the URL itself: credentials it does not accept, a user without the
commands asyncq needs, a db it does not have. Those are configuration errors (the URL must
change; ``asyncq`` exits 2), not a broker failure that waiting would mend. An unreachable
Redis stays ``BrokerUnavailable``."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

import anyio
import redis.asyncio as aioredis
from redis import exceptions as rx

from asyncq.errors import ConfigurationError

from .settings import RedisConnection

__all__ = ["refused_url"]

_NO_DB = ("DB index is out of range", "invalid DB index")  # Redis 7, and older releases


async def refused_url(
    connection: RedisConnection, where: str, exc: Exception
) -> ConfigurationError | None:
    """The configuration error ``exc`` means, if it says the URL is wrong; else None.

    ``exc`` is what the first command on a new connection raised, ``where`` the redacted URL.
    """
    message = str(exc)
    if isinstance(exc, rx.AuthenticationError):
        return ConfigurationError(f"Redis at {where} refused the URL's credentials: {message}")
    if isinstance(exc, rx.NoPermissionError):
        return ConfigurationError(
            f"Redis at {where} does not let the URL's user run what asyncq needs: {message}"
        )
    if isinstance(exc, rx.ResponseError) and any(text in message for text in _NO_DB):
        db = urlsplit(connection.url).path.strip("/")
        databases = await _databases(connection)
        if databases is None:
            return ConfigurationError(f"Redis at {where} has no db {db} ({message})")
        return ConfigurationError(
            f"Redis at {where} has no db {db} (it has {databases} databases: 0..{databases - 1})"
        )
    return None


async def _databases(connection: RedisConnection) -> int | None:
    """How many databases the server has, asked on db 0 with the same credentials; None if
    it will not say (CONFIG may be renamed, or refused to this user)."""
    parts = urlsplit(connection.url)
    url = urlunsplit(parts._replace(path="/0"))
    timeout = connection.socket_timeout
    try:
        with anyio.fail_after(timeout + connection.socket_connect_timeout):
            async with aioredis.Redis.from_url(
                url,
                socket_timeout=timeout,
                socket_connect_timeout=connection.socket_connect_timeout,
            ) as client:
                reply: Any = await client.config_get("databases")
        return int(reply["databases"])
    except (rx.RedisError, OSError, TimeoutError, KeyError, ValueError):
        return None
