"""One App's connections to PostgreSQL: a pool for statements, and for a worker or a waiter
one more connection that only ``LISTEN``\\ s.

Every connection asyncq opens sets ``statement_timeout`` and ``lock_timeout`` (a stuck
statement or a held lock fails in seconds instead of hanging a worker) and
``application_name=asyncq`` (so ``pg_stat_activity`` tells asyncq's sessions apart). A
connection that fails is a :class:`~asyncq.errors.BrokerUnavailable`, with the reason.

Notifications: producers send ``NOTIFY <channel>, 'q:<queue>'`` in the transaction that
enqueues (delivered only if it commits), settles send ``'d:<ids>'`` for the jobs they
finished, cancellations ``'c:<id>'``. The listening connection reconnects by itself; while it
is down, and after it comes back, everyone waiting looks again (nothing is missed: a waiter
also looks every ``idle_look`` seconds).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import asyncpg

from asyncq.errors import BrokerUnavailable, ConfigurationError

from . import schema
from .settings import PostgresSettings

__all__ = ["CONNECTION_ERRORS", "Database", "Signal"]

log = logging.getLogger("asyncq.postgres")

CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.InterfaceError,
    asyncpg.AdminShutdownError,
    asyncpg.ConnectionDoesNotExistError,
    # A session the server ended (a fast shutdown's FATAL, pg_terminate_backend) whose socket
    # is not closed yet: asyncpg read the message while idle and is left mid-operation, so
    # the next statement on it fails with "cannot switch to state 12; another operation (2)
    # is in progress", an InternalClientError (not an InterfaceError). Its subclass
    # OutdatedSchemaCacheError is cured the same way: a new connection has no stale cache.
    asyncpg.InternalClientError,
)
"""What a server that went away, or is not up yet, raises; a pooled connection that raised
one of them is not used again."""

_RECONNECT_FIRST, _RECONNECT_MAX = 0.05, 2.0


def _drop(conn: asyncpg.Connection) -> None:
    """Close a pooled connection that failed, closed or open on a session that has ended:
    the pool opens a new one in its place instead of handing this one out again."""
    try:
        conn.terminate()
    except asyncpg.InterfaceError:
        pass  # closed already: the pool let go of it then


async def _keep_session(conn: asyncpg.Connection) -> None:
    """A pooled connection goes back as it is. asyncpg's default reset (``RESET ALL``,
    ``UNLISTEN *``, ``pg_advisory_unlock_all()``, ``CLOSE ALL``) is one more round trip per
    use, for session state asyncq never leaves behind: it sets no session settings after
    connecting, listens on a connection of its own, takes only transaction-scoped locks and
    opens no cursors. A transaction left open (a statement failed mid-way) is still rolled
    back by the pool."""


_TYPES_USED = "SELECT $1::text[], $2::bytea[], $3::float8[], $4::int[], $5::smallint[]"
"""A statement with every array type asyncq's statements bind (asyncpg looks up such types
in the catalogs the first time a connection meets them, and keeps what it learned)."""


async def _learn_types_in_one_transaction(conn: asyncpg.Connection) -> None:
    """Through PgBouncer, each new connection learns its types inside one transaction.

    asyncpg's catalog query is costed far above ``jit_above_cost``, so it turns JIT off for
    the session around it; in transaction pooling those three statements may each run on a
    different server connection, and the lookup then pays for JIT compilation (0.65 s on
    PostgreSQL 15), stalling the first settle or claim of each connection past a short
    lease. One transaction keeps them on one server connection."""
    async with conn.transaction():
        await conn.fetchrow(_TYPES_USED, [], [], [], [], [])


async def _warn_without_timeouts(conn: asyncpg.Connection) -> None:
    """Through PgBouncer the timeouts come from the role or the database: say so when they
    are off, since a statement stuck on a lock would then hang a worker for good."""
    off = [
        name
        for name in ("statement_timeout", "lock_timeout")
        if await conn.fetchval(f"SELECT current_setting('{name}')") == "0"
    ]
    if off:
        log.warning(
            "postgres through PgBouncer: %s off on this role and database (asyncq cannot set "
            "them at connect there); set them, e.g. ALTER ROLE %s SET statement_timeout = "
            "'30s'; ALTER ROLE %s SET lock_timeout = '5s'",
            " and ".join(off),
            conn.get_settings().session_authorization or "<role>",
            conn.get_settings().session_authorization or "<role>",
        )


class Signal:
    """A wake-up many coroutines wait for: each ``poke`` ends the current wait."""

    def __init__(self) -> None:
        self._event = anyio.Event()

    def next_change(self) -> anyio.Event:
        """Take before looking; a poke after this wakes ``until``."""
        return self._event

    def poke(self) -> None:
        event, self._event = self._event, anyio.Event()
        event.set()

    @staticmethod
    async def until(change: anyio.Event, timeout: float | None) -> None:
        with anyio.move_on_after(timeout):
            await change.wait()


class Database:
    def __init__(self, settings: PostgresSettings) -> None:
        self.settings = settings
        self.schema = settings.schema
        self.channel = f"{settings.schema}_asyncq"
        self._pool: asyncpg.Pool | None = None
        self._listener: asyncpg.Connection | None = None
        self._listen_task: asyncio.Task[None] | None = None
        self._listening = False
        self._listen_scope: anyio.CancelScope | None = None
        self.on_notification: Callable[[str], None] = lambda payload: None
        self.on_listen_lost: Callable[[], None] = lambda: None
        self.listener_ready = anyio.Event()

    def _server_settings(self) -> dict[str, str]:
        s = self.settings
        if s.pgbouncer:  # PgBouncer refuses other startup parameters
            return {"application_name": "asyncq"}
        return {
            "statement_timeout": str(int(s.statement_timeout * 1000)),
            "lock_timeout": str(int(s.lock_timeout * 1000)),
            # asyncq's statements are short: compiling one costs more than it saves (the
            # counts behind queue_stats pass jit_above_cost on a backlog of millions).
            "jit": "off",
            "application_name": "asyncq",
        }

    def _connect_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"server_settings": self._server_settings()}
        if self.settings.pgbouncer or not self.settings.listen:  # no prepared statements
            options["statement_cache_size"] = 0
        return options

    async def _prepare(self, conn: asyncpg.Connection) -> None:
        if self.settings.pgbouncer:
            await _learn_types_in_one_transaction(conn)

    # -- opening and closing ---------------------------------------------------------------
    async def open(self) -> None:
        if self._pool is not None:
            return
        try:
            pool = await asyncpg.create_pool(
                self.settings.dsn,
                min_size=1,
                max_size=self.settings.pool_size,
                reset=_keep_session,
                init=self._prepare,
                **self._connect_options(),
            )
        except asyncpg.ProtocolViolationError as exc:
            if "unsupported startup parameter" in str(exc):  # PgBouncer's words
                raise ConfigurationError(
                    f"the server refused asyncq's connection settings ({exc}): this looks "
                    "like PgBouncer; add pgbouncer=true to the broker URL"
                ) from None
            raise BrokerUnavailable(f"cannot connect to PostgreSQL: {exc}") from None
        except CONNECTION_ERRORS as exc:
            raise BrokerUnavailable(f"cannot connect to PostgreSQL: {exc}") from None
        except asyncpg.PostgresError as exc:
            raise BrokerUnavailable(f"PostgreSQL refused the connection: {exc}") from None
        try:
            async with pool.acquire() as conn:
                if self.settings.migrate:
                    applied = await schema.upgrade(conn, self.schema)
                    if applied:
                        log.info(
                            "postgres schema %s: %d migration(s) applied", self.schema, applied
                        )
                else:
                    await schema.check_current(conn, self.schema)
                if self.settings.pgbouncer:
                    await _warn_without_timeouts(conn)
        except BaseException:
            await pool.close()
            raise
        self._pool = pool

    def ensure_listening(self) -> None:
        """Start the ``LISTEN`` connection's task, once, the first time someone will wait
        for a notification (a worker's fetch, a result waiter), unless ``listen=false``."""
        if self._listen_task is None and self.settings.listen:
            self._listen_task = asyncio.get_running_loop().create_task(self.listen_forever())

    async def close(self) -> None:
        task, self._listen_task = self._listen_task, None
        if task is not None:
            task.cancel()
            with anyio.CancelScope(shield=True):
                try:
                    await task
                except asyncio.CancelledError:
                    pass
        if self._listen_scope is not None:
            self._listen_scope.cancel()
        if self._listener is not None:
            with anyio.CancelScope(shield=True):
                try:
                    await self._listener.close(timeout=2)
                except Exception:  # already gone
                    self._listener.terminate()
            self._listener = None
        pool, self._pool = self._pool, None
        if pool is not None:
            with anyio.CancelScope(shield=True):
                try:
                    with anyio.fail_after(5):
                        await pool.close()
                except TimeoutError:
                    pool.terminate()
                except CONNECTION_ERRORS:
                    pool.terminate()

    async def _connect_one(self) -> asyncpg.Connection:
        try:
            conn = await asyncpg.connect(self.settings.dsn, **self._connect_options())
        except CONNECTION_ERRORS as exc:
            raise BrokerUnavailable(f"cannot connect to PostgreSQL: {exc}") from None
        try:
            await self._prepare(conn)
        except BaseException:
            conn.terminate()
            raise
        return conn

    async def pending_migrations(self) -> str:
        """The SQL that would bring the schema to this asyncq's version ('' when it is)."""
        conn = await self._connect_one()
        try:
            applied = await schema.applied_version(conn, self.schema)
            schema.check_version(self.schema, applied)
            return (
                ""
                if applied == schema.SCHEMA_VERSION
                else schema.migration_sql(self.schema, applied)
            )
        finally:
            await conn.close()

    async def upgrade(self) -> int:
        """Apply the migrations the schema lacks; how many."""
        conn = await self._connect_one()
        try:
            return await schema.upgrade(conn, self.schema)
        finally:
            await conn.close()

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise BrokerUnavailable("the PostgreSQL broker is not connected (open the App first)")
        return self._pool

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection; a lost server is a ``BrokerUnavailable``."""
        try:
            async with self.pool.acquire() as conn:
                try:
                    yield conn
                except CONNECTION_ERRORS:
                    _drop(conn)
                    raise
        except CONNECTION_ERRORS as exc:
            raise BrokerUnavailable(f"lost the connection to PostgreSQL: {exc!r}") from None
        except asyncpg.QueryCanceledError as exc:
            raise BrokerUnavailable(f"PostgreSQL cancelled a statement: {exc}") from None

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[asyncpg.Connection]:
        async with self.connection() as conn, conn.transaction():
            yield conn

    # -- listening -------------------------------------------------------------------------
    async def listen_forever(self) -> None:
        """Keep a ``LISTEN`` connection open, reconnecting when it is lost."""
        wait = _RECONNECT_FIRST
        with anyio.CancelScope() as scope:
            self._listen_scope = scope
            while True:
                try:
                    conn = await self._connect_listener()
                except (*CONNECTION_ERRORS, asyncpg.PostgresError) as exc:
                    log.debug("postgres listener: cannot connect (%s)", exc)
                    await anyio.sleep(wait * (0.5 + random.random()))
                    wait = min(wait * 2, _RECONNECT_MAX)
                    continue
                try:
                    lost = anyio.Event()
                    conn.add_termination_listener(lambda _c, lost=lost: lost.set())
                    try:
                        await conn.add_listener(self.channel, self._notified)
                    except CONNECTION_ERRORS:
                        continue
                    self._listener, wait = conn, _RECONNECT_FIRST
                    self.listener_ready.set()
                    # Anything sent while no one listened is looked for now.
                    self.on_listen_lost()
                    await lost.wait()
                    self.on_listen_lost()
                finally:
                    # Lost, or cancelled at close (at any await above): its socket goes now.
                    self._listener = None
                    if not conn.is_closed():
                        conn.terminate()

    async def _connect_listener(self) -> asyncpg.Connection:
        s = self.settings
        if s.listen_url is None:
            return await asyncpg.connect(s.dsn, **self._connect_options())
        # Straight to the server (past PgBouncer): its one statement is LISTEN.
        return await asyncpg.connect(s.listen_url, server_settings={"application_name": "asyncq"})

    def _notified(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        self.on_notification(payload)
