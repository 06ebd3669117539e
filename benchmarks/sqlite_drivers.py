"""Why the ``sqlite://`` backend runs stdlib ``sqlite3`` on the event loop, not aiosqlite.

    python3 -m venv .venv-bench-aiosqlite && .venv-bench-aiosqlite/bin/pip install aiosqlite
    .venv-bench-aiosqlite/bin/python benchmarks/sqlite_drivers.py

The same work, from an asyncio event loop, in WAL mode with ``synchronous=NORMAL``: one job's
write transaction (``BEGIN IMMEDIATE``, one INSERT, ``COMMIT``) at a time, 5,000 times, and
the point read a result wait makes. ``inline``: stdlib ``sqlite3`` called on the loop, as the
backend does (a commit without fsync takes microseconds); ``thread``: the same connection
through ``asyncio.to_thread``; ``aiosqlite``: its own thread per connection, a queue and a
future per call. The best of five runs of each.
"""

from __future__ import annotations

import asyncio
import sqlite3
import tempfile
import time
import uuid
from pathlib import Path

N = 5000
BODY = b"x" * 200
SCHEMA = (
    "CREATE TABLE jobs (seq INTEGER PRIMARY KEY, id TEXT UNIQUE, queue TEXT, body BLOB, "
    "state INTEGER)",
    "CREATE INDEX jobs_ready ON jobs (queue, seq) WHERE state = 0",
)


def _path() -> Path:
    path = Path(tempfile.mkdtemp()) / "bench.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    for statement in SCHEMA:
        conn.execute(statement)
    conn.close()
    return path


def _open(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA synchronous = NORMAL")
    return conn


def _write(conn: sqlite3.Connection) -> None:
    conn.execute("BEGIN IMMEDIATE")
    conn.execute(
        "INSERT INTO jobs (id, queue, body, state) VALUES (?, 'q', ?, 0)", (uuid.uuid4().hex, BODY)
    )
    conn.execute("COMMIT")


def _read(conn: sqlite3.Connection) -> None:
    conn.execute("SELECT state FROM jobs WHERE id = ?", ("missing",)).fetchone()


async def inline() -> tuple[float, float]:
    conn = _open(_path())
    start = time.perf_counter()
    for _ in range(N):
        _write(conn)
        await asyncio.sleep(0)  # what an await in the caller costs, at least
    write = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(N):
        _read(conn)
        await asyncio.sleep(0)
    return write, time.perf_counter() - start


async def thread() -> tuple[float, float]:
    conn = _open(_path())
    start = time.perf_counter()
    for _ in range(N):
        await asyncio.to_thread(_write, conn)
    write = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(N):
        await asyncio.to_thread(_read, conn)
    return write, time.perf_counter() - start


async def with_aiosqlite() -> tuple[float, float]:
    import aiosqlite

    async with aiosqlite.connect(_path(), isolation_level=None) as db:
        await db.execute("PRAGMA synchronous = NORMAL")
        start = time.perf_counter()
        for _ in range(N):
            await db.execute("BEGIN IMMEDIATE")
            await db.execute(
                "INSERT INTO jobs (id, queue, body, state) VALUES (?, 'q', ?, 0)",
                (uuid.uuid4().hex, BODY),
            )
            await db.execute("COMMIT")
        write = time.perf_counter() - start
        start = time.perf_counter()
        for _ in range(N):
            async with db.execute("SELECT state FROM jobs WHERE id = ?", ("missing",)) as cur:
                await cur.fetchone()
        return write, time.perf_counter() - start


async def main() -> None:
    runs = {"inline": inline, "thread": thread}
    try:
        import aiosqlite

        runs["aiosqlite " + aiosqlite.__version__] = with_aiosqlite
    except ImportError:
        print("aiosqlite is not installed here: its row is left out")
    print(f"{'':16} {'write txn':>14} {'point read':>14}")
    for name, run in runs.items():
        results = [await run() for _ in range(5)]
        write = min(r[0] for r in results) / N * 1e6
        read = min(r[1] for r in results) / N * 1e6
        print(f"{name:16} {write:11.1f} µs {read:11.1f} µs")


if __name__ == "__main__":
    asyncio.run(main())
