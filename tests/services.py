"""The brokers the tests talk to on 127.0.0.1, and what to do when one is not there.

In CI (``CI=true``) a missing broker fails the test loudly: a suite that skipped its Redis
tests would pass without proving anything. Elsewhere the test is skipped with the reason.
"""

from __future__ import annotations

import functools
import os
import shutil

import pytest
import redis

REDIS_URL = "redis://127.0.0.1:6379/15"


def _missing(what: str, exc: Exception) -> None:
    message = f"{what} is not answering ({exc}); start it with: bash scripts/services.sh"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@functools.cache
def _redis_error() -> Exception | None:
    try:
        with redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2) as client:
            client.ping()
    except redis.RedisError as exc:
        return exc
    return None


def require_redis() -> None:
    error = _redis_error()
    if error is not None:
        _missing("Redis at 127.0.0.1:6379", error)


def require_redis_server() -> str:
    """The path of the ``redis-server`` program, for tests that run a private server."""
    path = shutil.which("redis-server")
    if path is None:
        message = "redis-server is not installed (apt-get install redis-server)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def delete_redis_keys(prefix: str, url: str = REDIS_URL) -> None:
    """Remove every key a test made under its prefix (in the db of ``url``)."""
    with redis.Redis.from_url(url) as client:
        names = list(client.scan_iter(f"{prefix}:*", count=1000))
        for start in range(0, len(names), 1000):
            client.delete(*names[start : start + 1000])
