"""What the dashboard's pages show, read from the App's broker through the Backend and
JobStore contracts only, as plain JSON-ready dicts: the HTML pages render them and the JSON
API returns them as they are, so both always say the same thing.

Nothing here is loaded whole: listings are pages of ``PAGE`` items with a cursor for the
next one, and counts come from the broker's own counters (``queue_stats``)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from ..app import App
from ..errors import ConfigurationError, ErrorInfo
from ..periodic import report
from ..records import LISTABLE, DeadLetter, DeadLetterFilter, JobInfo, JobStatus, WorkerInfo
from ..serializer import DecodeError, Message
from .chart import MINUTES, chart

__all__ = ["PAGE", "DataOptions", "Reader"]

PAGE = 50
"""Items per page of every listing."""

HIDDEN = "(hidden)"


@dataclass(frozen=True, slots=True)
class DataOptions:
    show_data: bool = True
    """False: job arguments, headers and results are replaced by ``(hidden)`` (personal
    data); errors and tracebacks still show."""


def _error(error: ErrorInfo | None) -> dict[str, str] | None:
    if error is None:
        return None
    return {"type": error.type, "message": error.message, "traceback": error.traceback}


class Reader:
    """Reads one App's broker for the pages; every method is one page's (or part's) data."""

    def __init__(self, app: App, options: DataOptions) -> None:
        self.app = app
        self.options = options

    # -- overview --------------------------------------------------------------------------
    async def overview(self) -> dict[str, Any]:
        stats = await self.app.queue_stats()
        backend = self.app.backend
        store = backend.store
        workers = await store.workers() if store.available else []
        counts = (
            await backend.minute_counts(sorted(stats), MINUTES) if backend.counts_minutes else []
        )
        return {
            "broker": self.app.describe_broker(),
            "records": store.available,
            "now": time.time(),
            "queues": [
                {
                    "name": s.queue,
                    "pending": s.pending,
                    "scheduled": s.scheduled,
                    "running": s.running,
                    "dead": s.dead,
                    "oldest_pending_age": s.oldest_pending_age,
                }
                for s in sorted(stats.values(), key=lambda s: s.queue)
            ],
            "workers": len(workers),
            "in_flight": sum(w.in_flight for w in workers),
            "throughput": chart(counts) if backend.counts_minutes else None,
            "minutes": [
                {"queue": c.queue, "minute": c.minute, "succeeded": c.succeeded, "failed": c.failed}
                for c in counts
            ],
        }

    # -- a queue's jobs --------------------------------------------------------------------
    async def jobs(
        self, queue: str, status: JobStatus, *, task: str | None, after: str | None
    ) -> dict[str, Any]:
        """One page of ``queue``'s jobs in ``status``; with ``task``, only that task's (the
        broker is read page by page until a page's worth matches, or it runs out)."""
        if status not in LISTABLE:
            raise ValueError(
                f"jobs can be listed by status {', '.join(s.value for s in LISTABLE)}, "
                f"not {status.value!r} (finished jobs are found by id)"
            )
        backend = self.app.backend
        found: list[dict[str, Any]] = []
        cursor, more = after, True
        # A task filter reads on until a page is full; bounded, so a rare task in a deep
        # queue answers in time (the next page goes on from where this one stopped).
        for _ in range(20 if task else 1):
            listing = await backend.list_jobs(queue, status, limit=PAGE, after=cursor)
            more = len(listing) == PAGE
            for job in listing:
                cursor = job.cursor
                if task is None or job.task == task:
                    found.append(
                        {
                            "id": job.id,
                            "task": job.task,
                            "status": job.status.value,
                            "attempt": job.attempt,
                            "eta": job.eta,
                        }
                    )
                if len(found) == PAGE:
                    break
            if len(found) == PAGE or not more:
                break
        return {
            "queue": queue,
            "status": status.value,
            "task": task,
            "jobs": found,
            "next": cursor if more else None,
        }

    # -- one job ---------------------------------------------------------------------------
    async def job(self, job_id: str, queue: str | None) -> dict[str, Any] | None:
        """The job's record (in ``queue``, else looked for in every known queue), with its
        arguments and headers where the broker keeps its body, and its dead letter if it
        died. None: no queue knows it (or its record expired)."""
        store = self.app.backend.store
        queues = [queue] if queue else await self.app.known_queues()
        info: JobInfo | None = None
        for name in queues:
            info = await store.job_info(job_id, name) if store.available else None
            if info is not None:
                break
        dead = None
        # A dead job's letter adds its body and when it died to what the record says. Where
        # the store keeps no bodies (RabbitMQ's records), the letter is in RabbitMQ, read
        # from the head page by page: the record's error and traceback do without it.
        wanted = info is None or (info.status is JobStatus.DEAD and store.keeps_bodies)
        if wanted:
            for name in [info.queue] if info is not None else queues:
                dead = await self._dead_letter(name, job_id)
                if dead is not None:
                    break
        if info is None and dead is None:
            return None
        job: dict[str, Any] = {"id": job_id}
        if info is not None:
            job |= {
                "queue": info.queue,
                "task": info.task,
                "status": info.status.value,
                "attempt": info.attempt,
                "snoozes": info.snoozes,
                "eta": info.eta,
                "updated_at": info.updated_at,
                "error": _error(info.error),
                "progress": None
                if info.progress is None
                else {"value": info.progress.value, "message": info.progress.message},
                "result": self._result(info),
                "finished": info.status.finished,
            }
        if info is not None and not info.status.finished:
            body = await store.job_body(job_id, info.queue)
            if body is not None:
                job |= self._body(body)
        if dead is not None:
            job.setdefault("queue", dead.queue)
            job.setdefault("task", dead.task)
            job.setdefault("status", JobStatus.DEAD.value)
            job.setdefault("finished", True)
            job["died_at"] = dead.died_at
            job["error"] = _error(dead.error)
            job |= self._body(dead.body)
        return job

    def _result(self, info: JobInfo) -> Any:
        if info.raw_result is None:
            return None
        if not self.options.show_data:
            return HIDDEN
        try:
            return self.app.serializer.loads(info.raw_result)
        except ValueError:
            return repr(info.raw_result[:200])

    def _body(self, body: bytes) -> dict[str, Any]:
        """Arguments, headers and the trace id of an encoded job."""
        try:
            message = Message.decode(body, self.app.serializer)
        except DecodeError as exc:
            return {"body_error": str(exc)}
        traceparent = message.headers.get("traceparent", "")
        parts = traceparent.split("-")
        shown = self.options.show_data
        return {
            "args": list(message.args) if shown else HIDDEN,
            "kwargs": message.kwargs if shown else HIDDEN,
            "headers": message.headers if shown else HIDDEN,
            "trace_id": parts[1] if len(parts) == 4 else None,
            "enqueued_at": message.enqueued_at,
            "key": message.key,
            "priority": message.priority,
        }

    async def _dead_letter(self, queue: str, job_id: str) -> DeadLetter | None:
        return await self.app.backend.dead_letter(queue, job_id)

    # -- dead letters ----------------------------------------------------------------------
    async def dead_letters(
        self,
        queue: str,
        *,
        task: str | None,
        older_than: float | None,
        newer_than: float | None,
        after: str | None,
    ) -> dict[str, Any]:
        match = DeadLetterFilter(task=task, older_than=older_than, newer_than=newer_than)
        backend = self.app.backend
        found: list[DeadLetter] = []
        cursor, more = after, True
        for _ in range(20 if not match.by_id_only else 1):
            page = await backend.dead_letters(queue, limit=PAGE, after=cursor)
            more = len(page) == PAGE
            for dead in page:
                cursor = dead.cursor
                if match(dead):
                    found.append(dead)
                if len(found) == PAGE:
                    break
            if len(found) == PAGE or not more:
                break
        stats = (await self.app.queue_stats([queue]))[queue]
        return {
            "queue": queue,
            "total": stats.dead,
            "task": task,
            "older_than": older_than,
            "newer_than": newer_than,
            "letters": [
                {
                    "id": d.id,
                    "task": d.task,
                    "died_at": d.died_at,
                    "error": _error(d.error),
                }
                for d in found
            ],
            "next": cursor if more else None,
        }

    # -- workers and schedules -------------------------------------------------------------
    async def workers(self) -> dict[str, Any]:
        store = self.app.backend.store
        if not store.available:
            return {"records": False, "workers": []}
        found = await store.workers(include_gone=True)
        return {
            "records": True,
            "now": time.time(),
            "workers": [_worker(w) for w in sorted(found, key=lambda w: (w.gone, w.id))],
        }

    async def schedules(self) -> dict[str, Any]:
        store = self.app.backend.store
        if not store.available:
            return {"records": False, "schedules": []}
        rows: list[dict[str, Any]] = []
        for name in sorted(self.app.schedules):
            try:
                state = await report(self.app, self.app.schedules[name])
            except ConfigurationError as exc:
                rows.append({"name": name, "error": str(exc)})
                continue
            rows.append(
                {
                    "name": name,
                    "task": state.schedule.task,
                    "next_slot": state.next_slot.timestamp(),
                    "last_slot": None if state.last_slot is None else state.last_slot.timestamp(),
                    "last_job": state.last_job,
                    "last_status": None if state.last_status is None else state.last_status.value,
                    "paused": state.paused,
                }
            )
        return {"records": True, "schedules": rows}


def _worker(w: WorkerInfo) -> dict[str, Any]:
    return {
        "id": w.id,
        "host": w.host,
        "pid": w.pid,
        "queues": list(w.queues),
        "concurrency": w.concurrency,
        "in_flight": w.in_flight,
        "started_at": w.started_at,
        "last_seen": w.last_seen,
        "gone": w.gone,
    }
