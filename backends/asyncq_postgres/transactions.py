"""The caller's own connection, for jobs written in the caller's transaction
(``task.options(connection=...)``): an asyncpg connection (pooled or not), or a SQLAlchemy
``AsyncConnection`` / ``AsyncSession`` on the asyncpg driver, resolved to the asyncpg
connection underneath.

SQLAlchemy begins its transaction on the driver lazily, at the first statement: inside
``engine.begin()`` with nothing executed yet, the asyncpg connection is not in a transaction
at all. Writing there would commit the jobs at once, whatever the caller does next, so a
SQLAlchemy connection that is in a transaction but whose driver is not yet gets one
``SELECT 1`` through SQLAlchemy first, which makes it begin.
"""

from __future__ import annotations

from typing import Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy

__all__ = ["check", "driver_connection"]

_ASYNCPG = (asyncpg.Connection, PoolConnectionProxy)
_KINDS = (
    "an asyncpg connection, or a SQLAlchemy AsyncConnection or AsyncSession on asyncpg "
    "(postgresql+asyncpg://)"
)


def _sqlalchemy_kind(connection: object) -> str | None:
    """'session' or 'connection' for SQLAlchemy's async objects, else None (SQLAlchemy is
    imported only when the caller passes one of its objects)."""
    if not type(connection).__module__.startswith("sqlalchemy"):
        return None
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

    if isinstance(connection, AsyncSession):
        return "session"
    if isinstance(connection, AsyncConnection):
        return "connection"
    return None


def check(connection: object) -> None:
    if isinstance(connection, _ASYNCPG) or _sqlalchemy_kind(connection) is not None:
        return
    raise ValueError(f"connection= takes {_KINDS}, not {type(connection).__name__}")


async def driver_connection(connection: Any) -> tuple[asyncpg.Connection, bool]:
    """The asyncpg connection under ``connection``, and whether it is inside the caller's
    transaction (False: the caller asked for none, and the jobs get one of their own)."""
    if isinstance(connection, _ASYNCPG):
        return connection, connection.is_in_transaction()
    kind = _sqlalchemy_kind(connection)
    if kind == "session":
        connection = await connection.connection()  # the session's, in its transaction
    raw = await connection.get_raw_connection()
    driver = raw.driver_connection
    if not isinstance(driver, _ASYNCPG):
        raise ValueError(
            f"connection= needs SQLAlchemy on the asyncpg driver (postgresql+asyncpg://), "
            f"not {type(driver).__module__}"
        )
    if connection.in_transaction() and not driver.is_in_transaction():
        await connection.exec_driver_sql("SELECT 1")
    return driver, driver.is_in_transaction()
