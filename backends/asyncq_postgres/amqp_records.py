"""The AMQP backend's job records in PostgreSQL (``amqp://...?records=postgresql://...``):
what RabbitMQ cannot say of a job (its status, result, idempotency key, whether a worker
runs it), kept as rows of a ``postgresql://`` schema's ``jobs`` table, so a team whose
database is PostgreSQL needs no Redis beside RabbitMQ.

A record is a row whose ``state`` mirrors where its message is: READY while RabbitMQ holds
it in the work queue, WAITING while it waits in a delay queue (a delayed job, a retry's
backoff, a snooze, or one deferred by a limit), RUNNING once a worker admitted it, FINISHED
at the end; no PostgreSQL worker claims these rows (the schema is the records'). ``body`` is
empty: the message is RabbitMQ's. An idempotency key is the row's ``held_key``, unique per
queue: a dead or cancelled job frees it, a success holds it until its row expires, as on
the PostgreSQL broker. Results, progress, cancellations, heartbeats, periodic slots and
limits are the PostgreSQL broker's own (:class:`~.store.PostgresStore`), and so is the
expiry of finished rows (:meth:`maintain`, run by each worker).

Every change of a batch is one transaction; each delivery's admission takes its row's lock,
so two workers that receive copies of one message agree on which runs it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import anyio
import anyio.lowlevel
import asyncpg

from asyncq.delivery import Envelope
from asyncq.errors import BrokerError
from asyncq.record_json import error_to_json
from asyncq.records import JobStatus
from asyncq.settlement import Outcome, Settlement

from . import minutes as minute_rows
from . import upkeep
from .database import Database
from .delivery import Statements, notify_finished
from .schema import FINISHED, READY, RUNNING, WAITING
from .settings import PostgresSettings
from .store import PostgresStore

__all__ = ["PostgresRecords"]

log = logging.getLogger("asyncq.postgres")

_SKIP, _RUN, _RUN_REDELIVERED = 0, 1, 2  # the AMQP backend's Admission values
_QUEUED, _SCHEDULED = JobStatus.QUEUED.value, JobStatus.SCHEDULED.value
_UPKEEP_INTERVAL = 1.0


class PostgresRecords(PostgresStore):
    """The record store the AMQP backend drives (the same methods as its Redis one)."""

    keeps_bodies = False  # the body is RabbitMQ's; a record's is empty

    def __init__(self, url: str, *, result_ttl: float) -> None:
        settings = PostgresSettings.from_url(url)
        db = Database(settings)
        super().__init__(db, result_ttl)
        db.on_notification = self._notified
        db.on_listen_lost = self.wake_all
        s = self._s
        self._columns = (
            f"INSERT INTO {s}.jobs (id, queue, task, body, key, held_key, state, status, "
            "ord, ready_at, eta, updated_at) VALUES ($1, $2, $3, '', $4, $4, $5, $6, $7, $7, "
            "$8, $7)"
        )
        unsure = f"publish_unsure AND status IN ('{_QUEUED}', '{_SCHEDULED}')"
        self._free_key = (
            f"UPDATE {s}.jobs SET held_key = NULL, "
            f"state = CASE WHEN {unsure} THEN {FINISHED} ELSE state END, "
            f"status = CASE WHEN {unsure} THEN '{JobStatus.CANCELLED.value}' ELSE status END, "
            f"eta = CASE WHEN {unsure} THEN NULL ELSE eta END, "
            f"updated_at = CASE WHEN {unsure} THEN $3 ELSE updated_at END, "
            f"expires_at = CASE WHEN {unsure} THEN $4 ELSE expires_at END, "
            "publish_unsure = false "
            f"WHERE queue = $1 AND held_key = $2 AND ((state = {FINISHED} AND expires_at <= $3) "
            f"OR ({unsure}))"
        )
        # A batch without keys or replays (the usual one), in one statement.
        self._insert_plain = (
            f"INSERT INTO {s}.jobs (id, queue, task, body, state, status, ord, ready_at, eta, "
            "updated_at) SELECT i, q, t, '', st, stt, $6, $6, e, $6 FROM unnest($1::text[], "
            "$2::text[], $3::text[], $4::smallint[], $5::text[], $7::float8[]) "
            "AS u(i, q, t, st, stt, e) ON CONFLICT DO NOTHING RETURNING id"
        )
        # A batch of successes (the usual settle), in one statement: a success keeps its
        # key until the row expires; a record START made has its task filled in.
        self._succeed = (
            f"UPDATE {s}.jobs j SET state = {FINISHED}, status = 'succeeded', "
            "result = u.result, error = NULL, eta = NULL, deferred = false, "
            "cancel_requested = false, updated_at = $5, expires_at = u.expires, "
            "task = CASE WHEN j.task = '' THEN u.task ELSE j.task END "
            "FROM unnest($1::text[], $2::text[], $3::bytea[], $4::float8[], $6::text[]) "
            "AS u(queue, id, result, expires, task) WHERE j.queue = u.queue AND j.id = u.id"
        )
        self._notify = Statements(settings.schema, db.channel)

    # -- connection ------------------------------------------------------------------------
    async def connect(self) -> None:
        await self._db.open()

    async def close(self) -> None:
        await self._db.close()

    def _notified(self, payload: str) -> None:
        kind, _, rest = payload.partition(":")
        if kind == "d":
            self.wake_finished(rest.split(","))
        elif kind == "c":
            self.cancellations.poke()

    async def maintain(self) -> None:
        """Delete finished records once they expire, and the small tables' stale rows."""
        while True:
            await anyio.sleep(_UPKEEP_INTERVAL)
            try:
                async with self._db.connection() as conn:
                    while await upkeep.expire_jobs(conn, self._s, time.time()) >= (
                        upkeep.EXPIRE_BATCH
                    ):
                        await anyio.lowlevel.checkpoint()
                    await upkeep.sweep(conn, self._s, time.time())
                    await minute_rows.sweep(conn, self._s, time.time())
            except BrokerError as exc:  # the server away: the next round tries again
                log.debug("postgres records upkeep: %s", exc)

    # -- the life of a job -----------------------------------------------------------------
    async def enqueue(self, envelopes: Sequence[Envelope]) -> list[tuple[str, bool]]:
        """Store the jobs' records; per job, its id (the key holder's, if the key is taken)
        and whether its message is to be published (False: the same job is stored already,
        or another holds its key)."""
        now, s, ttl = time.time(), self._s, self._result_ttl
        out: list[tuple[str, bool]] = []
        plain = [env for env in envelopes if env.key is None and not env.replay]
        async with self._db.transaction() as conn:
            stored_plain: set[str] = set()
            if plain:
                delayed = [env.eta is not None and env.eta > now for env in plain]
                rows = await conn.fetch(
                    self._insert_plain,
                    [env.id for env in plain],
                    [env.queue for env in plain],
                    [env.task for env in plain],
                    [WAITING if later else READY for later in delayed],
                    [_SCHEDULED if later else _QUEUED for later in delayed],
                    now,
                    [env.eta if later else None for env, later in zip(plain, delayed, strict=True)],
                )
                stored_plain = {r["id"] for r in rows}
            for env in envelopes:
                if env.key is None and not env.replay:
                    out.append((env.id, env.id in stored_plain))
                    continue
                delayed_one = env.eta is not None and env.eta > now
                if env.key is not None:
                    # The key is free again if its holder's record has expired, or if the
                    # holder is a job whose publish went unanswered (its enqueue failed, so
                    # no caller has its id) and that no worker has started: that one ends
                    # as cancelled, so a copy of it that did reach the queue is skipped.
                    await conn.execute(self._free_key, env.queue, env.key, now, now + ttl)
                    holder = await conn.fetchval(
                        f"SELECT id FROM {s}.jobs WHERE queue = $1 AND held_key = $2",
                        env.queue,
                        env.key,
                    )
                    if holder is not None:
                        out.append((holder, False))
                        continue
                if env.replay:
                    # A dead or cancelled job sent again under its id starts afresh.
                    await conn.execute(
                        f"DELETE FROM {s}.jobs WHERE queue = $1 AND id = $2 AND state = 3 "
                        "AND status <> 'succeeded'",
                        env.queue,
                        env.id,
                    )
                stored = await conn.fetchval(
                    self._columns + " ON CONFLICT DO NOTHING RETURNING id",
                    env.id,
                    env.queue,
                    env.task,
                    env.key,
                    WAITING if delayed_one else READY,
                    _SCHEDULED if delayed_one else _QUEUED,
                    now,
                    env.eta if delayed_one else None,
                )
                if stored is None and env.key is not None:
                    # Another producer's job took the key first (its commit let this insert
                    # go on, and do nothing): that job is the one.
                    holder = await conn.fetchval(
                        f"SELECT id FROM {s}.jobs WHERE queue = $1 AND held_key = $2",
                        env.queue,
                        env.key,
                    )
                    out.append((holder or env.id, False))
                    continue
                out.append((env.id, stored is not None))
            # A worker may have seen a message before its record was stored (the message
            # and the record are sent at once) and started a record without a task.
            await conn.execute(
                f"UPDATE {s}.jobs j SET task = u.task FROM unnest($1::text[], $2::text[]) "
                "AS u(id, task) WHERE j.id = u.id AND j.task = ''",
                [env.id for env in envelopes],
                [env.task for env in envelopes],
            )
            known = sorted({env.queue for env in envelopes})
            await conn.execute(
                f"INSERT INTO {s}.queues SELECT unnest($1::text[]) ON CONFLICT DO NOTHING", known
            )
        return out

    async def unsure(self, queue: str, ids: Sequence[str]) -> None:
        """Mark jobs whose publish got no answer (the message may be in the queue or not):
        an enqueue of the same key (the producer trying again) replaces them instead of
        returning an id whose message may not exist; a worker's start clears the mark."""
        async with self._db.connection() as conn:
            await conn.execute(
                f"UPDATE {self._s}.jobs SET publish_unsure = true WHERE queue = $1 "
                f"AND id = ANY($2::text[]) AND status IN ('{_QUEUED}', '{_SCHEDULED}')",
                queue,
                list(ids),
            )

    async def forget(self, queue: str, ids: Sequence[str]) -> None:
        """Undo :meth:`enqueue` for jobs the broker refused."""
        async with self._db.connection() as conn:
            await conn.execute(
                f"DELETE FROM {self._s}.jobs WHERE queue = $1 AND id = ANY($2::text[])",
                queue,
                list(ids),
            )

    async def register(self, queues: Sequence[str]) -> None:
        async with self._db.connection() as conn:
            await conn.execute(
                f"INSERT INTO {self._s}.queues SELECT unnest($1::text[]) ON CONFLICT DO NOTHING",
                list(queues),
            )

    async def queues(self) -> list[str]:
        async with self._db.connection() as conn:
            rows = await conn.fetch(f"SELECT name FROM {self._s}.queues ORDER BY name")
        return [r["name"] for r in rows]

    async def unregister(self, queue: str) -> None:
        async with self._db.connection() as conn:
            await conn.execute(f"DELETE FROM {self._s}.queues WHERE name = $1", queue)

    async def start(
        self, batches: Sequence[tuple[str, Sequence[tuple[str, int, bool]]]]
    ) -> list[int]:
        """Admit deliveries, given per queue as (id, attempt, redelivered): per delivery
        skip (0: acknowledge, do not run), run (1), or run redelivered (2: an earlier
        delivery's worker was lost while running it)."""
        now, s = time.time(), self._s
        verdicts: list[int] = []
        finished: list[str] = []
        async with self._db.transaction() as conn:
            for queue, items in batches:
                rows = await conn.fetch(
                    f"SELECT id, status, attempt, cancel_requested FROM {s}.jobs "
                    "WHERE queue = $1 AND id = ANY($2::text[]) ORDER BY id FOR UPDATE",
                    queue,
                    [job_id for job_id, _, _ in items],
                )
                found = {r["id"]: r for r in rows}
                running: list[str] = []
                for job_id, attempt, redelivered in items:
                    r = found.get(job_id)
                    verdict = _RUN
                    if r is None:  # no record (expired): run it, and keep one from now
                        await conn.execute(
                            self._columns + " ON CONFLICT DO NOTHING",
                            job_id, queue, "", None, RUNNING, JobStatus.RUNNING.value, now,
                            None,
                        )  # fmt: skip
                    elif JobStatus(r["status"]).finished or attempt < r["attempt"]:
                        verdict = _SKIP  # ended, or a stale copy of an attempt that failed
                    elif r["cancel_requested"]:
                        await self._finish(conn, queue, job_id, JobStatus.CANCELLED, now, None)
                        finished.append(job_id)
                        verdict = _SKIP
                    elif r["status"] == JobStatus.RUNNING.value and redelivered:
                        verdict = _RUN_REDELIVERED
                    if verdict != _SKIP:
                        running.append(job_id)
                    verdicts.append(verdict)
                if running:
                    await conn.execute(
                        f"UPDATE {s}.jobs SET state = {RUNNING}, status = 'running', eta = NULL, "
                        "deferred = false, publish_unsure = false, updated_at = $3 "
                        "WHERE queue = $1 AND id = ANY($2)",
                        queue,
                        running,
                        now,
                    )
            await self._notify_finished(conn, finished)
        self.wake_finished(finished)
        return verdicts

    async def settle(self, settlements: Sequence[Settlement]) -> None:
        now = time.time()
        finished: list[str] = []
        successes = [st for st in settlements if st.outcome is Outcome.SUCCEEDED]
        async with self._db.transaction() as conn:
            if successes:
                ttl = self._result_ttl
                await conn.execute(
                    self._succeed,
                    [st.delivery.queue for st in successes],
                    [st.delivery.id for st in successes],
                    [st.result for st in successes],
                    [now + (ttl if st.result_ttl is None else st.result_ttl) for st in successes],
                    now,
                    [st.task for st in successes],
                )
                finished.extend(st.delivery.id for st in successes)
            for st in settlements:
                d, outcome = st.delivery, st.outcome
                if outcome is Outcome.SUCCEEDED:
                    continue
                if st.task:
                    await conn.execute(
                        f"UPDATE {self._s}.jobs SET task = $3 WHERE queue = $1 AND id = $2 "
                        "AND task = ''",
                        d.queue,
                        d.id,
                        st.task,
                    )
                if outcome is Outcome.DEAD or outcome is Outcome.CANCELLED:
                    status = JobStatus.DEAD if outcome is Outcome.DEAD else JobStatus.CANCELLED
                    error = error_to_json(st.error) if st.error is not None else None
                    await self._finish(conn, d.queue, d.id, status, now, st.result_ttl, error)
                    finished.append(d.id)
                elif outcome is Outcome.RETRY or outcome is Outcome.SNOOZE:
                    await self._again(conn, st, now)
                elif outcome is Outcome.RELEASE:
                    await conn.execute(
                        f"UPDATE {self._s}.jobs SET state = {READY}, status = 'queued', "
                        "updated_at = $3 WHERE queue = $1 AND id = $2 AND status = 'running'",
                        d.queue,
                        d.id,
                        now,
                    )
                elif outcome is Outcome.DEFER:
                    # Over a limit, not started: its message waits in the delay queues, and
                    # it counts as pending meanwhile.
                    await conn.execute(
                        f"UPDATE {self._s}.jobs SET state = {WAITING}, status = 'queued', "
                        "eta = $3, deferred = true, updated_at = $4 "
                        "WHERE queue = $1 AND id = $2",
                        d.queue,
                        d.id,
                        st.eta,
                        now,
                    )
            await minute_rows.add(conn, self._s, settlements, now)
            await self._notify_finished(conn, finished)
        self.wake_finished(finished)

    async def _again(self, conn: asyncpg.Connection, st: Settlement, now: float) -> None:
        """A retry (its attempt set, not added to: settling one batch twice is harmless) or
        a snooze: waiting until its eta, or queued at once."""
        d, eta = st.delivery, st.eta or 0.0
        later = eta > now
        if st.outcome is Outcome.RETRY:
            waiting = JobStatus.FAILED.value
            change = "attempt = $7, error = $8"
            extra: tuple[object, ...] = (
                st.attempt + 1,
                error_to_json(st.error) if st.error is not None else None,
            )
        else:
            waiting, change, extra = JobStatus.SCHEDULED.value, "snoozes = snoozes + 1", ()
        await conn.execute(
            f"UPDATE {self._s}.jobs SET state = $3, status = $4, eta = $5, updated_at = $6, "
            f"{change} WHERE queue = $1 AND id = $2",
            d.queue,
            d.id,
            WAITING if later else READY,
            waiting if later else JobStatus.QUEUED.value,
            eta if later else None,
            now,
            *extra,
        )

    async def _finish(
        self,
        conn: asyncpg.Connection,
        queue: str,
        job_id: str,
        status: JobStatus,
        now: float,
        result_ttl: float | None,
        error: bytes | None = None,
    ) -> None:
        """End a record as dead or cancelled: its key is free again (a success, settled
        in a batch of its own, keeps its key until its row expires); what only a waiting
        job has goes."""
        ttl = self._result_ttl if result_ttl is None else result_ttl
        await conn.execute(
            f"UPDATE {self._s}.jobs SET state = {FINISHED}, status = $3, "
            "error = coalesce($4, error), eta = NULL, deferred = false, "
            "cancel_requested = false, held_key = NULL, updated_at = $5, expires_at = $6 "
            "WHERE queue = $1 AND id = $2",
            queue,
            job_id,
            status.value,
            error,
            now,
            now + ttl,
        )

    async def _notify_finished(self, conn: asyncpg.Connection, ids: Sequence[str]) -> None:
        await notify_finished(conn, self._notify, ids)

    async def purge(self, queue: str, taken: Sequence[str], limit: int) -> int:
        """Cancel the jobs whose messages were ``taken`` off the work queue, and up to
        ``limit`` delayed or retrying ones (their messages are dropped when they come due);
        how many in all."""
        now, s = time.time(), self._s
        async with self._db.transaction() as conn:
            waiting = await conn.fetch(
                f"SELECT id FROM {s}.jobs WHERE queue = $1 AND state = {WAITING} "
                "ORDER BY eta LIMIT $2 FOR UPDATE SKIP LOCKED",
                queue,
                limit,
            )
            ids = [*taken, *(r["id"] for r in waiting)]
            ended = await conn.fetch(
                f"SELECT id FROM {s}.jobs WHERE queue = $1 AND id = ANY($2::text[]) "
                f"AND state < {FINISHED}",
                queue,
                ids,
            )
            finished = [r["id"] for r in ended]
            for job_id in finished:
                await self._finish(conn, queue, job_id, JobStatus.CANCELLED, now, None)
            await self._notify_finished(conn, finished)
        self.wake_finished(finished)
        return len(taken) + len(waiting)

    # -- reading ---------------------------------------------------------------------------
    async def counts(self, queues: Sequence[str]) -> list[tuple[int, int, int]]:
        """(scheduled, running, deferred) per queue: of the scheduled, ``deferred`` wait on a
        rate or concurrency limit (queued: counted as pending)."""
        async with self._db.connection() as conn:
            rows = await conn.fetch(
                f"SELECT q, "
                f"(SELECT count(*) FROM {self._s}.jobs WHERE queue = q AND state = {WAITING}), "
                f"(SELECT count(*) FROM {self._s}.jobs WHERE queue = q AND state = {RUNNING}), "
                f"(SELECT count(*) FROM {self._s}.jobs WHERE queue = q AND state = {WAITING} "
                "AND deferred) FROM unnest($1::text[]) WITH ORDINALITY AS t(q, n) ORDER BY n",
                list(queues),
            )
        return [(int(r[1]), int(r[2]), int(r[3])) for r in rows]

    async def ids(self, queue: str, which: str) -> list[str]:
        """The ids of a queue's ``scheduled`` (waiting) or ``running`` jobs, sorted."""
        state = WAITING if which == "scheduled" else RUNNING
        async with self._db.connection() as conn:
            rows = await conn.fetch(
                f"SELECT id FROM {self._s}.jobs WHERE queue = $1 AND state = {state} ORDER BY id",
                queue,
            )
        return [r["id"] for r in rows]
