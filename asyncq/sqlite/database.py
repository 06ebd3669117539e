"""One process's connection to a ``sqlite://`` file: its pragmas, transactions that wait
out other processes' writes, and the WAL checkpoints, on a thread of their own.

SQLite lets one writer at a time into a file. A write here takes the lock at its start
(``BEGIN IMMEDIATE``), so it cannot fail half-way for want of it, and a refusal is answered
by waiting a little (doubling from 0.2 ms to 20 ms, jittered) and trying again, on the event
loop, up to ``busy_timeout``: no caller ever sees ``database is locked``. SQLite's own busy
handler would do the same waiting inside the C call, blocking the event loop, so its
timeout is 0 here.

With ``synchronous=normal`` a commit writes the WAL without an fsync, in microseconds, so
transactions run on the event loop itself: a hop to a thread would cost more than the work.
With ``synchronous=full`` every commit waits for an fsync, so they run on a thread, one at
a time. Either way, checkpoints (copying the WAL back into the database, with fsyncs) never
run on the event loop: automatic checkpoints are off on this connection and a checkpoint
thread runs them when the WAL has grown past ``CHECKPOINT_PAGES``, and restarts the WAL
from its beginning each time, so it stays near that size under any load.
"""

from __future__ import annotations

import logging
import random
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import anyio

from ..errors import BrokerError, BrokerUnavailable
from . import schema
from .settings import SqliteSettings

__all__ = ["Database"]

log = logging.getLogger("asyncq.sqlite")

T = TypeVar("T")

CHECKPOINT_PAGES = 1000
"""The WAL size, in pages, past which the checkpoint thread copies it back (SQLite's own
automatic checkpoint threshold)."""
CHECKPOINT_LOOK = 0.2
"""Seconds between two looks of the checkpoint thread at the WAL's size while it is written;
doubled while it is not, up to ``CHECKPOINT_IDLE_LOOK``."""
CHECKPOINT_IDLE_LOOK = 2.0
JOURNAL_SIZE_LIMIT = 64 * 1024 * 1024
"""Bytes a WAL file is cut back to once checkpointed, so a burst does not leave it large."""

_FIRST_WAIT, _MAX_WAIT = 0.0002, 0.02
_BUSY = (5, 6)  # SQLITE_BUSY, SQLITE_LOCKED: another connection holds what this one needs

_OPEN: dict[Path, weakref.WeakSet[Database]] = {}
"""The databases open in this process, by file: a commit wakes the others at once, instead
of at their next look at ``PRAGMA data_version``."""


def _is_busy(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in _BUSY
    text = str(exc)
    return "locked" in text or "busy" in text


class Database:
    def __init__(self, settings: SqliteSettings) -> None:
        self.settings = settings
        self.path = settings.path
        self._conn: sqlite3.Connection | None = None
        self._version_conn: sqlite3.Connection | None = None
        """Where ``data_version`` is read when transactions run on a thread (a connection of
        the event loop's own, so a look never waits for a thread's commit)."""
        self._threaded = settings.synchronous == "full"
        self._lock = anyio.Lock()  # the connection's transactions, one at a time (threaded)
        self._checkpointer: _Checkpointer | None = None
        self.on_sibling_commit: Callable[[], None] | None = None
        """Called when another connection of this process to the same file commits."""
        self.busy_waits = 0
        """How many times a write waited for another connection's (for tests and stats)."""

    # -- opening and closing ---------------------------------------------------------------
    async def open(self) -> None:
        if self._conn is not None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                self.path, timeout=0, isolation_level=None, check_same_thread=False
            )
        except (OSError, sqlite3.Error) as exc:
            raise BrokerUnavailable(f"cannot open the sqlite file {self.path}: {exc}") from None
        self._conn = conn
        try:
            await self.write(self._configure, begin=False)
            await self.write(lambda c: schema.create(c, str(self.path)))
        except BaseException:
            self._conn = None
            conn.close()
            raise
        if self._threaded:
            self._version_conn = sqlite3.connect(
                self.path, timeout=0, isolation_level=None, check_same_thread=False
            )
        _OPEN.setdefault(self.path, weakref.WeakSet()).add(self)
        self._checkpointer = _Checkpointer(self.path, self.settings.synchronous)
        self._checkpointer.start()

    def _configure(self, conn: sqlite3.Connection) -> None:
        (mode,) = conn.execute("PRAGMA journal_mode = WAL").fetchone()
        if mode.lower() != "wal":
            raise BrokerError(
                f"the sqlite file {self.path} cannot be put in WAL mode (it is {mode!r}); "
                "it must live on a local filesystem"
            )
        conn.execute(f"PRAGMA synchronous = {self.settings.synchronous.upper()}")
        conn.execute("PRAGMA wal_autocheckpoint = 0")  # the checkpoint thread's job
        conn.execute(f"PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT}")
        conn.execute("PRAGMA foreign_keys = OFF")

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        siblings = _OPEN.get(self.path)
        if siblings is not None:
            siblings.discard(self)
        checkpointer, self._checkpointer = self._checkpointer, None
        if checkpointer is not None:
            await anyio.to_thread.run_sync(checkpointer.stop)
        version_conn, self._version_conn = self._version_conn, None
        if version_conn is not None:
            version_conn.close()
        if conn is not None:
            async with self._lock:
                conn.close()

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise BrokerError(
                f"the sqlite broker {self.path} is not connected (use `async with app`)"
            )
        return self._conn

    # -- transactions ----------------------------------------------------------------------
    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn(conn)`` in one read transaction (a consistent snapshot; never waits for a
        writer, in WAL mode)."""
        return await self._run(fn, "BEGIN")

    async def write(self, fn: Callable[[sqlite3.Connection], T], *, begin: bool = True) -> T:
        """``fn(conn)`` in one write transaction, committed, after waiting (without blocking
        the event loop) for other processes' writes to end."""
        result = await self._run(fn, "BEGIN IMMEDIATE" if begin else None)
        self._tell_siblings()
        return result

    async def _run(self, fn: Callable[[sqlite3.Connection], T], begin: str | None) -> T:
        conn = self.conn
        wait, deadline = _FIRST_WAIT, None
        while True:
            try:
                if self._threaded:
                    async with self._lock:
                        return await anyio.to_thread.run_sync(_transaction, conn, fn, begin)
                return _transaction(conn, fn, begin)
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc):
                    raise self._broker_error(exc) from None
            except sqlite3.Error as exc:
                raise self._broker_error(exc) from None
            self.busy_waits += 1
            now = time.monotonic()
            if deadline is None:
                deadline = now + self.settings.busy_timeout
            elif now >= deadline:
                raise BrokerUnavailable(
                    f"the sqlite file {self.path} has been locked by another connection for "
                    f"{self.settings.busy_timeout:g} s (a process stuck in a write, or a "
                    "file on a network filesystem, which SQLite's locks do not work on)"
                )
            await anyio.sleep(wait * random.uniform(0.5, 1.5))
            wait = min(wait * 2, _MAX_WAIT)

    def _broker_error(self, exc: sqlite3.Error) -> BrokerError:
        return BrokerError(f"sqlite broker {self.path}: {exc}")

    def _tell_siblings(self) -> None:
        siblings = _OPEN.get(self.path)
        if siblings is None or len(siblings) < 2:
            return
        for sibling in list(siblings):
            if sibling is not self and sibling.on_sibling_commit is not None:
                sibling.on_sibling_commit()

    def data_version(self) -> int:
        """A number that changes when another connection commits to the file."""
        conn = self._version_conn or self.conn
        try:
            return int(conn.execute("PRAGMA data_version").fetchone()[0])
        except sqlite3.Error as exc:
            raise self._broker_error(exc) from None


def _transaction(
    conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T], begin: str | None
) -> T:
    if begin is None:
        return fn(conn)
    conn.execute(begin)
    try:
        result = fn(conn)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return result


class _Checkpointer:
    """A thread that checkpoints the WAL once it holds ``CHECKPOINT_PAGES`` pages, on a
    connection of its own; stopped when its Database closes."""

    def __init__(self, path: Path, synchronous: str) -> None:
        self._path = path
        self._wal = Path(f"{path}-wal")
        self._synchronous = synchronous
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"asyncq-sqlite-checkpoint:{path.name}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        try:
            # Its RESTART waits for a writer to finish, up to a second, in SQLite's own busy
            # handler: on this thread, so nobody else waits with it.
            conn = sqlite3.connect(self._path, timeout=1.0, isolation_level=None)
        except sqlite3.Error as exc:
            log.warning("sqlite checkpoints of %s cannot run: %s", self._path, exc)
            return
        try:
            conn.execute(f"PRAGMA synchronous = {self._synchronous.upper()}")
            conn.execute(f"PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT}")
            (page_size,) = conn.execute("PRAGMA page_size").fetchone()
            threshold = CHECKPOINT_PAGES * page_size
            seen, look = 0, CHECKPOINT_LOOK
            while not self._stop.wait(look):
                # The WAL file keeps its size once reset (up to JOURNAL_SIZE_LIMIT): its
                # modification time says whether anything was written since the last look.
                try:
                    wal = self._wal.stat()
                except FileNotFoundError:
                    continue
                if wal.st_mtime_ns == seen:
                    look = min(look * 2, CHECKPOINT_IDLE_LOOK)
                    continue
                look, seen = CHECKPOINT_LOOK, wal.st_mtime_ns
                if wal.st_size < threshold:
                    continue
                try:
                    # PASSIVE copies what it can without waiting for anyone. Under a steady
                    # load new frames keep coming, so it never catches up with the WAL's end
                    # and the WAL is never started afresh: it would grow without bound.
                    # RESTART then copies the few frames left, waiting (on this thread) for
                    # the writer of the moment, so the next write starts the WAL over.
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
                except sqlite3.OperationalError as exc:
                    if not _is_busy(exc):  # another process checkpoints: its turn
                        log.warning("sqlite checkpoint of %s failed: %s", self._path, exc)
        finally:
            conn.close()
