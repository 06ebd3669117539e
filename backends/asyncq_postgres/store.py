"""The job records of a ``postgresql://`` broker: status, results, cancellation, heartbeats,
progress, periodic slots and limits, in the schema of the jobs (see :mod:`.schema`).

Waiting for a job's end costs no query per waiter while nothing happens: a settle in this
process wakes the waiters of the jobs it finished at once, a settle elsewhere by its
``NOTIFY`` (see :mod:`.database`), and every waiter looks again each ``idle_look`` seconds in
case a notification was missed (the listener reconnecting, or ``listen=false``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime

import anyio

from asyncq.errors import BrokerError
from asyncq.record_json import (
    error_from_json,
    progress_from_json,
    progress_to_json,
    worker_from_json,
    worker_to_json,
)
from asyncq.records import (
    GONE_RETENTION,
    ConcurrencyRequest,
    JobInfo,
    JobStatus,
    MinuteCounts,
    Permit,
    Progress,
    RateRequest,
    ScheduleState,
    WorkerInfo,
)
from asyncq.store import JobStore

from . import limits
from . import minutes as minute_rows
from .database import Database, Signal

__all__ = ["PostgresStore"]

log = logging.getLogger("asyncq.postgres")


class PostgresStore(JobStore):
    keeps_bodies = True

    def __init__(self, db: Database, result_ttl: float) -> None:
        self._db = db
        self._s = f'"{db.schema}"'
        self._result_ttl = result_ttl
        self._finished: dict[str, set[anyio.Event]] = {}
        """The events of the coroutines waiting for each job's end."""
        self.cancellations = Signal()

    # -- waking ----------------------------------------------------------------------------
    def wake_finished(self, job_ids: Sequence[str]) -> None:
        """These jobs finished: wake whoever waits for them in this process."""
        finished = self._finished
        if finished:
            for job_id in job_ids:
                for event in finished.get(job_id, ()):
                    event.set()

    def wake_all(self) -> None:
        """A notification may have been missed: every waiter looks again."""
        for events in self._finished.values():
            for event in events:
                event.set()
        self.cancellations.poke()

    async def minute_counts(self, queues: Sequence[str], minutes: int) -> list[MinuteCounts]:
        """The per-minute counts the settles of this schema added (see minutes.py)."""
        async with self._db.connection() as conn:
            return await minute_rows.read(conn, self._s, queues, minutes)

    # -- records ---------------------------------------------------------------------------
    async def job_body(self, job_id: str, queue: str) -> bytes | None:
        async with self._db.connection() as conn:
            body: bytes | None = await conn.fetchval(
                f"SELECT body FROM {self._s}.jobs WHERE id = $1 AND queue = $2 AND state < 3",
                job_id,
                queue,
            )
        return body or None  # empty: a record of the AMQP broker, whose body is RabbitMQ's

    async def job_info(self, job_id: str, queue: str) -> JobInfo | None:
        async with self._db.connection() as conn:
            r = await conn.fetchrow(
                f"SELECT status, task, attempt, eta, result, error, updated_at, progress, snoozes "
                f"FROM {self._s}.jobs WHERE id = $1 AND queue = $2 "
                "AND (state < 3 OR expires_at > $3)",
                job_id,
                queue,
                time.time(),
            )
        if r is None:
            return None
        return JobInfo(
            id=job_id,
            status=JobStatus(r["status"]),
            task=r["task"],
            queue=queue,
            attempt=r["attempt"],
            eta=r["eta"],
            raw_result=r["result"],
            error=error_from_json(r["error"]) if r["error"] else None,
            updated_at=r["updated_at"],
            progress=progress_from_json(r["progress"]) if r["progress"] else None,
            snoozes=r["snoozes"],
        )

    async def wait_finished(self, job_id: str, queue: str, timeout: float | None) -> JobInfo | None:
        self._db.ensure_listening()
        waiters = self._finished.setdefault(job_id, set())
        event = anyio.Event()
        waiters.add(event)  # before the first look: a settle between the two is not missed
        try:
            with anyio.fail_after(timeout):
                while True:
                    info = await self.job_info(job_id, queue)
                    if info is None or info.status.finished:
                        return info
                    with anyio.move_on_after(self._db.settings.idle_look):
                        await event.wait()
                    waiters.discard(event)
                    event = anyio.Event()
                    waiters.add(event)
        finally:
            waiters.discard(event)
            if not waiters:
                self._finished.pop(job_id, None)

    async def set_progress(self, job_id: str, queue: str, progress: Progress) -> None:
        async with self._db.connection() as conn:
            await conn.execute(
                f"UPDATE {self._s}.jobs SET progress = $1 WHERE id = $2 AND queue = $3 "
                "AND state < 3",
                progress_to_json(progress),
                job_id,
                queue,
            )

    async def cancel(self, job_id: str, queue: str) -> bool:
        now, s = time.time(), self._s
        async with self._db.transaction() as conn:
            state = await conn.fetchval(
                f"SELECT state FROM {s}.jobs WHERE id = $1 AND queue = $2 FOR UPDATE",
                job_id,
                queue,
            )
            if state is None or state == 3:
                return False
            if state == 2:
                # The worker holding it cancels its scope and settles it as CANCELLED; the
                # flag covers a worker that is gone and will never settle it.
                await conn.execute(
                    f"UPDATE {s}.jobs SET cancel_requested = true WHERE id = $1", job_id
                )
                await conn.execute(
                    f"INSERT INTO {s}.cancellations (job_id, at) VALUES ($1, $2)", job_id, now
                )
                await conn.execute("SELECT pg_notify($1, $2)", self._db.channel, "c:" + job_id)
                return True
            await conn.execute(
                f"UPDATE {s}.jobs SET state = 3, status = 'cancelled', eta = NULL, "
                "deferred = false, held_key = NULL, updated_at = $2, expires_at = $3 "
                "WHERE id = $1",
                job_id,
                now,
                now + self._result_ttl,
            )
            await conn.execute("SELECT pg_notify($1, $2)", self._db.channel, "d:" + job_id)
        self.wake_finished([job_id])
        return True

    async def watch_cancellations(self, on_cancel: Callable[[str], None]) -> None:
        self._db.ensure_listening()
        s = self._s
        seen: int | None = None
        while True:
            change = self.cancellations.next_change()
            try:
                async with self._db.connection() as conn:
                    if seen is None:  # requests from before this worker started are not its
                        seen = await conn.fetchval(
                            f"SELECT coalesce(max(seq), 0) FROM {s}.cancellations"
                        )
                    rows = await conn.fetch(
                        f"SELECT seq, job_id FROM {s}.cancellations WHERE seq > $1 ORDER BY seq",
                        seen,
                    )
            except BrokerError as exc:  # the server away: look again in a moment
                log.debug("postgres cancellations: %s", exc)
                rows = []
            for r in rows:
                seen = r["seq"]
                on_cancel(r["job_id"])
            await self.cancellations.until(change, self._db.settings.idle_look)

    # -- heartbeats ------------------------------------------------------------------------
    async def heartbeat(self, worker: WorkerInfo, ttl: float) -> None:
        async with self._db.connection() as conn:
            await conn.execute(
                f"INSERT INTO {self._s}.workers VALUES ($1, $2, $3) ON CONFLICT (id) "
                "DO UPDATE SET info = excluded.info, expires = excluded.expires",
                worker.id,
                worker_to_json(worker),
                time.time() + ttl,
            )

    async def deregister(self, worker_id: str) -> None:
        async with self._db.connection() as conn:
            await conn.execute(f"DELETE FROM {self._s}.workers WHERE id = $1", worker_id)

    async def workers(self, *, include_gone: bool = False) -> list[WorkerInfo]:
        now = time.time()
        async with self._db.connection() as conn:
            rows = await conn.fetch(
                f"SELECT info, expires FROM {self._s}.workers WHERE expires > $1",
                now - GONE_RETENTION,
            )
        found = []
        for r in rows:
            info = worker_from_json(r["info"])
            if r["expires"] <= now:
                if not include_gone:
                    continue
                info = replace(info, gone=True)
            found.append(info)
        return found

    # -- periodic schedules ----------------------------------------------------------------
    async def claim_slot(self, schedule: str, slot: datetime, ttl: float, job_id: str = "") -> bool:
        now, slot_ms = time.time(), round(slot.timestamp() * 1000)
        async with self._db.transaction() as conn:
            await conn.execute(
                f"DELETE FROM {self._s}.slot_claims WHERE schedule = $1 AND until <= $2",
                schedule,
                now,
            )
            status = await conn.execute(
                f"INSERT INTO {self._s}.slot_claims VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                schedule,
                slot_ms,
                now + ttl,
                job_id,
            )
        return bool(status == "INSERT 0 1")

    async def schedule_state(self, schedule: str) -> ScheduleState:
        s = self._s
        async with self._db.connection() as conn:
            paused = await conn.fetchval(
                f"SELECT EXISTS (SELECT 1 FROM {s}.paused_schedules WHERE schedule = $1)", schedule
            )
            r = await conn.fetchrow(
                f"SELECT slot_ms, job_id FROM {s}.slot_claims WHERE schedule = $1 AND until > $2 "
                "ORDER BY slot_ms DESC LIMIT 1",
                schedule,
                time.time(),
            )
        if r is None:
            return ScheduleState(paused=bool(paused))
        slot = datetime.fromtimestamp(r["slot_ms"] / 1000, UTC)
        return ScheduleState(slot, r["job_id"] or None, bool(paused))

    async def pause_schedule(self, schedule: str, paused: bool) -> None:
        statement = (
            f"INSERT INTO {self._s}.paused_schedules VALUES ($1) ON CONFLICT DO NOTHING"
            if paused
            else f"DELETE FROM {self._s}.paused_schedules WHERE schedule = $1"
        )
        async with self._db.connection() as conn:
            await conn.execute(statement, schedule)

    # -- limits ----------------------------------------------------------------------------
    async def take_rate_permits(self, requests: Sequence[RateRequest]) -> list[float]:
        async with self._db.connection() as conn:
            return await limits.take_rate(conn, self._s, requests)

    async def take_concurrency_permits(self, requests: Sequence[ConcurrencyRequest]) -> list[float]:
        async with self._db.connection() as conn:
            return await limits.take_concurrency(conn, self._s, requests)

    async def take_order_tickets(self, keys: Sequence[str]) -> list[int]:
        async with self._db.connection() as conn:
            return await limits.take_tickets(conn, self._s, keys)

    async def void_order_tickets(self, tickets: Sequence[tuple[str, int]]) -> None:
        async with self._db.connection() as conn:
            await limits.void_tickets(conn, self._s, tickets)

    async def renew_concurrency_permits(self, permits: Sequence[Permit], lease: float) -> None:
        async with self._db.connection() as conn:
            await limits.renew_concurrency(conn, self._s, permits, lease)

    async def release_concurrency_permits(
        self, permits: Sequence[Permit], held_for: Sequence[float]
    ) -> None:
        async with self._db.connection() as conn:
            await limits.release_concurrency(conn, self._s, permits, held_for)
