"""The brokers the tests talk to on 127.0.0.1, and what to do when one is not there.

In CI (``CI=true``) a missing broker fails the test loudly: a suite that skipped its Redis
tests would pass without proving anything. Elsewhere the test is skipped with the reason.
"""

from __future__ import annotations

import asyncio
import functools
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Collection

import pytest
import redis

REDIS_URL = "redis://127.0.0.1:6379/15"
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"


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


@functools.cache
def _rabbitmq_error() -> Exception | None:
    import aio_pika

    async def connect() -> None:
        connection = await aio_pika.connect(AMQP_URL, timeout=5)
        await connection.close()

    try:
        asyncio.run(connect())
    except Exception as exc:  # any failure to connect means the broker is not usable
        return exc
    return None


def require_rabbitmq() -> None:
    error = _rabbitmq_error()
    if error is not None:
        _missing("RabbitMQ at 127.0.0.1:5672", error)


@functools.cache
def _postgres_error() -> Exception | None:
    import asyncpg

    async def connect() -> None:
        connection = await asyncpg.connect(POSTGRES_URL, timeout=5)
        await connection.close()

    try:
        asyncio.run(connect())
    except Exception as exc:  # any failure to connect means the server is not usable
        return exc
    return None


def require_postgres() -> None:
    error = _postgres_error()
    if error is not None:
        _missing("PostgreSQL at 127.0.0.1:5432 (database test)", error)


_DROPPED_SCHEMAS = [0]
"""How many test schemas this session dropped."""

_CATALOGS = (
    "pg_attribute", "pg_class", "pg_type", "pg_depend", "pg_constraint", "pg_index",
    "pg_attrdef", "pg_proc", "pg_namespace", "pg_description",
)  # fmt: skip


def drop_postgres_schema(schema: str) -> None:
    """Drop a test's schema and everything in it."""
    import asyncpg

    async def drop() -> None:
        connection = await asyncpg.connect(POSTGRES_URL, timeout=5)
        try:
            await connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await connection.close()

    asyncio.run(drop())
    _DROPPED_SCHEMAS[0] += 1


def vacuum_postgres_catalogs() -> None:
    """After a session that dropped test schemas: VACUUM the catalog tables their tables
    and functions were rows of. A session creates and drops some thousand tables; on a
    server whose autovacuum is off (this machine's is) their dead rows would pile up,
    session after session, and slow everything that reads the catalogs."""
    if not _DROPPED_SCHEMAS[0]:
        return
    import asyncpg

    async def vacuum() -> None:
        connection = await asyncpg.connect(POSTGRES_URL, timeout=5)
        try:
            await connection.execute("VACUUM " + ", ".join(f"pg_catalog.{t}" for t in _CATALOGS))
        finally:
            await connection.close()

    try:
        asyncio.run(vacuum())
    except (OSError, asyncpg.PostgresError) as exc:  # maintenance only: no test failed
        print(f"services: could not VACUUM the PostgreSQL catalogs: {exc}", file=sys.stderr)


def require_rabbitmq_and_redis() -> None:
    """What the AMQP backend needs: RabbitMQ for the jobs, Redis for their records."""
    require_rabbitmq()
    require_redis()


def delete_amqp_entities(pattern: str) -> None:
    """Delete the queues and exchanges whose names match ``pattern`` (a regex), through
    rabbitmqctl; tests name theirs with a unique prefix, so this removes only theirs."""
    rabbitmqctl = shutil.which("rabbitmqctl")
    if rabbitmqctl is None:
        return
    names = re.compile(pattern)
    for kind in ("queue", "exchange"):
        listed = subprocess.run(
            [rabbitmqctl, "-q", f"list_{kind}s", "name"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.split()
        doomed = [n for n in listed if names.match(n)]
        if doomed:
            asyncio.run(_delete(kind, doomed))


def delete_amqp_prefixes(prefixes: Collection[str]) -> None:
    """Delete the queues and exchanges whose names start with one of ``prefixes`` and a dot:
    those of this session's tests, and never another session's on the same broker."""
    if prefixes:
        delete_amqp_entities("|".join(rf"{re.escape(p)}\." for p in prefixes))


async def _delete(kind: str, names: list[str]) -> None:
    import aio_pika

    connection = await aio_pika.connect(AMQP_URL, timeout=5)
    async with connection:
        channel = await connection.channel()
        for name in names:
            if kind == "queue":
                await channel.queue_delete(name)
            else:
                await channel.exchange_delete(name)


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


# -- one broker of a test's own, by kind -----------------------------------------------------
BROKER_KINDS = ("memory", "redis", "amqp")
"""What the operator tests run on: the in-process broker, Redis, RabbitMQ with records."""


def require_broker(kind: str) -> None:
    """Fail (in CI) or skip unless the servers ``kind`` needs answer; memory needs none."""
    if kind == "redis":
        require_redis()
    elif kind == "amqp":
        require_rabbitmq_and_redis()


def broker_url(kind: str, unique: str) -> str:
    """A URL of broker ``kind`` under names (prefix, queues) only this test uses."""
    if kind == "memory":
        return f"memory://{unique}"
    if kind == "redis":
        return f"{REDIS_URL}?prefix={unique}"
    return f"{AMQP_URL}?records={REDIS_URL}&prefix={unique}"


def clean_broker(kind: str, unique: str) -> None:
    """Delete what a test made on broker ``kind`` under ``unique``."""
    if kind != "memory":
        delete_redis_keys(unique)
    if kind == "amqp":
        delete_amqp_entities(rf"{unique}\.")
