"""``list_jobs``: a queue's jobs in one state, from where each state is kept.

* QUEUED: the work queue, browsed from the front without taking anything (browse.py); the
  cursor is a job's place in it. The messages read go back with RabbitMQ's redelivered
  flag, which, without a record store, the job then sees as ``redelivered``.
* SCHEDULED (and FAILED, waiting for a retry): with a record store its ``scheduled`` set;
  without one the queue's own wait queues and ``q.delayed``, browsed, each message's due
  time read from its ``x-eta-ms`` header. Soonest first.
* RUNNING: the record store's ``running`` set, oldest start first. Without a store it is
  a ``ConfigurationError``: RabbitMQ does not say which messages other consumers hold.
* DEAD: the dead-letter queue, oldest first, as ``dead_letters`` reads it.

Each call reads the whole state it lists (a set, or the queues browsed) and pages in
memory: meant for a dashboard's pages, not for queues of millions.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING

import orjson
from aio_pika.abc import AbstractIncomingMessage

from asyncq.errors import ConfigurationError
from asyncq.records import JobInfo, JobListing, JobStatus

from .browse import browse
from .connection import Link
from .dead_letters import DeadLetters, attempt
from .settings import RECORDS_HINT
from .topology import Topology

if TYPE_CHECKING:
    from .record_store import JobRecords

__all__ = ["Listing"]


class Listing:
    def __init__(
        self,
        link: Link,
        topology: Topology,
        dead_letters: DeadLetters,
        records: JobRecords | None,
    ) -> None:
        self._link = link
        self._topology = topology
        self._dead_letters = dead_letters
        self._records = records

    async def jobs(
        self, queue: str, status: JobStatus, *, limit: int, after: str | None
    ) -> list[JobListing]:
        if status is JobStatus.DEAD:
            return [
                JobListing(d.id, queue, JobStatus.DEAD, d.task, cursor=d.cursor)
                for d in await self._dead_letters.page(queue, limit=limit, after=after)
            ]
        if status is JobStatus.QUEUED:
            return await self._queued(queue, limit, after)
        if status is JobStatus.SCHEDULED:
            if self._records is None:
                found = await self._delayed(queue)
            else:
                found = await self._from_records(queue, "scheduled")
        elif status is JobStatus.RUNNING:
            if self._records is None:
                raise ConfigurationError(
                    f"listing running jobs needs a job record store: {RECORDS_HINT}"
                )
            found = await self._from_records(queue, "running")
        else:
            raise ValueError(f"jobs cannot be listed by status {status.value!r}")
        found.sort(key=lambda j: j.cursor)
        return [j for j in found if after is None or j.cursor > after][:limit]

    async def _queued(self, queue: str, limit: int, after: str | None) -> list[JobListing]:
        start = int(after) + 1 if after is not None else 0
        found: list[JobListing] = []
        with self._link.errors("listing queued jobs"):
            async with browse(self._link, self._topology.names.work(queue)) as messages:
                place = 0
                async for message in messages:
                    if place >= start:
                        found.append(_listing(queue, JobStatus.QUEUED, message, str(place)))
                        if len(found) >= limit:
                            break
                    place += 1
        return found

    async def _delayed(self, queue: str) -> list[JobListing]:
        names = self._topology.names
        found: list[JobListing] = []
        with self._link.errors("listing delayed jobs"):
            for name in (names.delayed(queue), *names.waits(queue)):
                async with browse(self._link, name) as messages:
                    async for message in messages:
                        raw = (message.headers or {}).get("x-eta-ms")
                        eta = raw / 1000 if isinstance(raw, int) else None
                        retry = attempt(message) > 1
                        status = JobStatus.FAILED if retry else JobStatus.SCHEDULED
                        cursor = _cursor(eta or 0.0, message.message_id or "")
                        found.append(_listing(queue, status, message, cursor, eta))
        return found

    async def _from_records(self, queue: str, which: str) -> list[JobListing]:
        records = self._records
        assert records is not None
        ids = await records.ids(queue, which)
        infos: Sequence[JobInfo | None] = await asyncio.gather(
            *(records.job_info(job_id, queue) for job_id in ids)
        )
        found = []
        for job_id, info in zip(ids, infos, strict=True):
            if info is None:
                continue  # finished meanwhile, and expired
            when = (info.eta or 0.0) if which == "scheduled" else info.updated_at
            found.append(
                JobListing(
                    job_id,
                    queue,
                    info.status,
                    info.task,
                    info.attempt,
                    info.eta,
                    _cursor(when, job_id),
                )
            )
        return found


def _cursor(when: float, job_id: str) -> str:
    """Sorts by time (whole microseconds), then id."""
    return f"{round(when * 1_000_000):020d}-{job_id}"


def _listing(
    queue: str,
    status: JobStatus,
    message: AbstractIncomingMessage,
    cursor: str,
    eta: float | None = None,
) -> JobListing:
    return JobListing(
        message.message_id or "",
        queue,
        status,
        _task(message.body),
        attempt(message),
        eta,
        cursor,
    )


def _task(body: bytes) -> str:
    """The task a job's message names ('' for one that cannot be read)."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return ""
    task = data.get("task") if isinstance(data, dict) else None
    return task if isinstance(task, str) else ""
