"""The job records of a ``sqlite://`` broker: status, results, cancellation, heartbeats,
progress, periodic slots and limits, in the same file as the jobs (see :mod:`.schema`).

Waiting for a job's end costs no query per waiter: a settle in this process wakes the
waiters of the jobs it finished, and when another process has committed, one query asks
which of the awaited jobs have finished (see :meth:`SqliteStore.outside_change`).
"""

from __future__ import annotations

import functools
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime

import anyio

from ..records import (
    GONE_RETENTION,
    ConcurrencyRequest,
    JobInfo,
    JobStatus,
    Permit,
    Progress,
    RateRequest,
    ScheduleState,
    WorkerInfo,
)
from ..store import JobStore
from . import limits
from .codec import (
    error_from_json,
    progress_from_json,
    progress_to_json,
    worker_from_json,
    worker_to_json,
)
from .database import Database
from .delivery import free_key
from .watch import Watch

__all__ = ["SqliteStore"]

_CHUNK = 500  # ids per IN (...) list, below SQLite's limit on parameters
_BODY = "SELECT body FROM jobs WHERE id = ? AND queue = ? AND state < 3"

_JOB = """SELECT status, task, attempt, eta, result, error, updated_at, progress, snoozes
FROM jobs WHERE id = ? AND queue = ? AND (state < 3 OR expires_at > ?)"""


class SqliteStore(JobStore):
    keeps_bodies = True

    def __init__(self, db: Database, result_ttl: float) -> None:
        self._db = db
        self._result_ttl = result_ttl
        self.watch = Watch(db, self.outside_change)
        self._finished: dict[str, set[anyio.Event]] = {}
        """The events of the coroutines waiting for each job's end."""

    # -- waking ----------------------------------------------------------------------------
    def wake_finished(self, job_ids: Sequence[str]) -> None:
        """This process finished these jobs: wake whoever waits for them."""
        finished = self._finished
        if finished:
            for job_id in job_ids:
                for event in finished.get(job_id, ()):
                    event.set()

    async def outside_change(self) -> None:
        """Another connection committed: find which of the awaited jobs finished."""
        if not self._finished:
            return
        waited = list(self._finished)
        done = await self._db.read(lambda conn: _finished_among(conn, waited))
        self.wake_finished(done)

    # -- records ---------------------------------------------------------------------------
    async def job_body(self, job_id: str, queue: str) -> bytes | None:
        row = await self._db.read(lambda conn: conn.execute(_BODY, (job_id, queue)).fetchone())
        return None if row is None else bytes(row[0])

    async def job_info(self, job_id: str, queue: str) -> JobInfo | None:
        row = await self._db.read(
            lambda conn: conn.execute(_JOB, (job_id, queue, time.time())).fetchone()
        )
        if row is None:
            return None
        status, task, attempt, eta, result, error, updated_at, progress, snoozes = row
        return JobInfo(
            id=job_id,
            status=JobStatus(status),
            task=task,
            queue=queue,
            attempt=attempt,
            eta=eta,
            raw_result=result,
            error=error_from_json(error),
            updated_at=updated_at,
            progress=progress_from_json(progress),
            snoozes=snoozes,
        )

    async def wait_finished(self, job_id: str, queue: str, timeout: float | None) -> JobInfo | None:
        info = await self.job_info(job_id, queue)
        if info is None or info.status.finished:
            return info
        waiters = self._finished.setdefault(job_id, set())
        event = anyio.Event()
        waiters.add(event)
        try:
            with anyio.fail_after(timeout):
                while True:
                    await self.watch.until(event, None)
                    info = await self.job_info(job_id, queue)
                    if info is None or info.status.finished:
                        return info
                    waiters.discard(event)
                    event = anyio.Event()
                    waiters.add(event)
        finally:
            waiters.discard(event)
            if not waiters:
                self._finished.pop(job_id, None)

    async def set_progress(self, job_id: str, queue: str, progress: Progress) -> None:
        raw = progress_to_json(progress)
        await self._db.write(
            lambda conn: conn.execute(
                "UPDATE jobs SET progress = ? WHERE id = ? AND queue = ? AND state < 3",
                (raw, job_id, queue),
            )
        )

    async def cancel(self, job_id: str, queue: str) -> bool:
        now = time.time()
        result_ttl = self._result_ttl

        def cancel(conn: sqlite3.Connection) -> str:
            row = conn.execute(
                "SELECT state, key FROM jobs WHERE id = ? AND queue = ?", (job_id, queue)
            ).fetchone()
            if row is None or row[0] == 3:
                return "finished"
            state, key = row
            if state == 2:
                # The worker holding it cancels its scope and settles it as CANCELLED; the
                # flag covers a worker that is gone and will never settle it.
                conn.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ?", (job_id,))
                conn.execute("INSERT INTO cancellations (job_id, at) VALUES (?, ?)", (job_id, now))
                return "running"
            conn.execute(
                "UPDATE jobs SET state = 3, status = 'cancelled', eta = NULL, deferred = 0, "
                "updated_at = ?, expires_at = ? WHERE id = ?",
                (now, now + result_ttl, job_id),
            )
            free_key(conn, queue, key, job_id)
            return "waiting"

        outcome = await self._db.write(cancel)
        if outcome == "finished":
            return False
        if outcome == "waiting":
            self.wake_finished([job_id])
        self.watch.changed()
        return True

    async def watch_cancellations(self, on_cancel: Callable[[str], None]) -> None:
        def newest(conn: sqlite3.Connection) -> int:
            return int(
                conn.execute("SELECT coalesce(max(seq), 0) FROM cancellations").fetchone()[0]
            )

        seen = await self._db.read(newest)
        while True:
            change = self.watch.next_change()
            rows = await self._db.read(functools.partial(_cancellations_after, seq=seen))
            for seq, job_id in rows:
                seen = seq
                on_cancel(job_id)
            await self.watch.until(change, None)

    # -- heartbeats ------------------------------------------------------------------------
    async def heartbeat(self, worker: WorkerInfo, ttl: float) -> None:
        raw, expires = worker_to_json(worker), time.time() + ttl
        await self._db.write(
            lambda conn: conn.execute(
                "INSERT OR REPLACE INTO workers VALUES (?, ?, ?)", (worker.id, raw, expires)
            )
        )

    async def deregister(self, worker_id: str) -> None:
        await self._db.write(
            lambda conn: conn.execute("DELETE FROM workers WHERE id = ?", (worker_id,))
        )

    async def workers(self, *, include_gone: bool = False) -> list[WorkerInfo]:
        now = time.time()
        rows = await self._db.read(
            lambda conn: conn.execute(
                "SELECT info, expires FROM workers WHERE expires > ?",
                (now - GONE_RETENTION,),
            ).fetchall()
        )
        found = []
        for raw, expires in rows:
            info = worker_from_json(raw)
            if expires <= now:
                if not include_gone:
                    continue
                info = replace(info, gone=True)
            found.append(info)
        return found

    # -- periodic schedules ----------------------------------------------------------------
    async def claim_slot(self, schedule: str, slot: datetime, ttl: float, job_id: str = "") -> bool:
        now, slot_ms = time.time(), round(slot.timestamp() * 1000)

        def claim(conn: sqlite3.Connection) -> bool:
            conn.execute("DELETE FROM slot_claims WHERE until <= ?", (now,))
            return bool(
                conn.execute(
                    "INSERT OR IGNORE INTO slot_claims VALUES (?, ?, ?, ?)",
                    (schedule, slot_ms, now + ttl, job_id),
                ).rowcount
            )

        return await self._db.write(claim)

    async def schedule_state(self, schedule: str) -> ScheduleState:
        now = time.time()

        def state(conn: sqlite3.Connection) -> ScheduleState:
            paused = conn.execute(
                "SELECT 1 FROM paused_schedules WHERE schedule = ?", (schedule,)
            ).fetchone()
            row = conn.execute(
                "SELECT slot_ms, job_id FROM slot_claims WHERE schedule = ? AND until > ? "
                "ORDER BY slot_ms DESC LIMIT 1",
                (schedule, now),
            ).fetchone()
            if row is None:
                return ScheduleState(paused=paused is not None)
            slot = datetime.fromtimestamp(row[0] / 1000, UTC)
            return ScheduleState(slot, row[1] or None, paused is not None)

        return await self._db.read(state)

    async def pause_schedule(self, schedule: str, paused: bool) -> None:
        statement = (
            "INSERT OR IGNORE INTO paused_schedules VALUES (?)"
            if paused
            else "DELETE FROM paused_schedules WHERE schedule = ?"
        )
        await self._db.write(lambda conn: conn.execute(statement, (schedule,)))

    # -- limits ----------------------------------------------------------------------------
    async def take_rate_permits(self, requests: Sequence[RateRequest]) -> list[float]:
        return await self._db.write(lambda conn: limits.take_rate(conn, requests))

    async def take_concurrency_permits(self, requests: Sequence[ConcurrencyRequest]) -> list[float]:
        return await self._db.write(lambda conn: limits.take_concurrency(conn, requests))

    async def take_order_tickets(self, keys: Sequence[str]) -> list[int]:
        return await self._db.write(lambda conn: limits.take_tickets(conn, keys))

    async def void_order_tickets(self, tickets: Sequence[tuple[str, int]]) -> None:
        await self._db.write(lambda conn: limits.void_tickets(conn, tickets))

    async def renew_concurrency_permits(self, permits: Sequence[Permit], lease: float) -> None:
        await self._db.write(lambda conn: limits.renew_concurrency(conn, permits, lease))

    async def release_concurrency_permits(
        self, permits: Sequence[Permit], held_for: Sequence[float]
    ) -> None:
        await self._db.write(lambda conn: limits.release_concurrency(conn, permits, held_for))


def _finished_among(conn: sqlite3.Connection, job_ids: list[str]) -> list[str]:
    done: list[str] = []
    for start in range(0, len(job_ids), _CHUNK):
        chunk = job_ids[start : start + _CHUNK]
        marks = ",".join("?" * len(chunk))
        done.extend(
            job_id
            for (job_id,) in conn.execute(
                f"SELECT id FROM jobs WHERE id IN ({marks}) AND state = 3", chunk
            )
        )
    return done


def _cancellations_after(conn: sqlite3.Connection, seq: int) -> list[tuple[int, str]]:
    return conn.execute(
        "SELECT seq, job_id FROM cancellations WHERE seq > ? ORDER BY seq", (seq,)
    ).fetchall()
