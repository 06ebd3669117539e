"""The JobStore contract: job records, cancellation and worker heartbeats.

A :class:`~asyncq.backend.Backend` moves jobs; its ``store`` keeps what is known about them.
Brokers that can keep records (memory, Redis) serve the store themselves; RabbitMQ cannot,
so the AMQP backend composes with the store its ``records=`` URL names, and without one its
``store`` is a :class:`MissingStore`, whose every call says which option to add.

What a store does:

* ``job_info``, ``wait_finished`` (without polling), ``cancel`` and ``watch_cancellations``
  (how the worker running a cancelled job hears of it);
* worker heartbeats: ``heartbeat``, ``deregister``, ``workers``;
* a running job's progress: ``set_progress``, read back in ``job_info``;
* periodic schedules: ``claim_slot`` (one atomic step: exactly one caller wins a slot, and
  the claim outlives the slot's job), ``schedule_state`` (the last slot fired, its job,
  whether the schedule is paused) and ``pause_schedule``.

* rate limits: ``take_rate_permits``, a sliding log per limit key: a permit is taken only
  while fewer than ``limit`` were taken in the last ``per`` seconds, so no window of
  ``per`` seconds, wherever it falls, holds more than ``limit`` starts.

* concurrency limits: ``take_concurrency_permits``, ``renew_concurrency_permits`` and
  ``release_concurrency_permits``: at most ``limit`` holders per key, each holding for a
  lease, so a lost worker's permits come back when their leases run out.

A refusal of either kind says how long to wait: for a rate, until a permit can be had (the
n-th refused caller of a key waits for the n-th permit to come free, so waiters are spread
out rather than woken together); for a concurrency limit, an estimate from how long the
key's permits have been held lately.

A job belongs to its queue: its record and its idempotency key live with the queue (one
Redis Cluster slot per queue), so the record calls name the queue as well as the job id.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import ClassVar, NoReturn

from .errors import ConfigurationError
from .records import (
    ConcurrencyRequest,
    JobInfo,
    Permit,
    Progress,
    RateRequest,
    ScheduleState,
    WorkerInfo,
)

__all__ = ["ORDER_SKIP_AFTER", "JobStore", "MissingStore"]

ORDER_SKIP_AFTER = 60.0
"""Seconds the line of an ordered key waits for a ticket that does not ask before it moves
on past it: longer than any wait a refused job is given (30 s), so a live one is never
passed over."""


class JobStore(abc.ABC):
    """Base class of job record stores. Subclasses implement every abstract method."""

    available: ClassVar[bool] = True
    """False for :class:`MissingStore`: the backend keeps no records, and what needs them
    (results, status, cancellation, idempotency keys, the list of workers) is refused. The
    worker runs without heartbeats then, and the contract suite skips the record tests."""

    keeps_bodies: ClassVar[bool] = False
    """True where :meth:`job_body` can give a waiting or running job's body."""

    async def job_body(self, job_id: str, queue: str) -> bytes | None:
        """The job as it was encoded (its arguments and headers), while the broker keeps it:
        for the dashboard, not the hot path. None when the job is unknown, finished (a dead
        job's body is its dead letter's), or its broker keeps bodies elsewhere (RabbitMQ)."""
        return None

    @abc.abstractmethod
    async def job_info(self, job_id: str, queue: str) -> JobInfo | None:
        """The job's record; None when the store does not know it (or it expired)."""

    @abc.abstractmethod
    async def wait_finished(self, job_id: str, queue: str, timeout: float | None) -> JobInfo | None:
        """Wait, without polling, until the job is finished; None if it is unknown.

        Raises ``TimeoutError`` when ``timeout`` passes first."""

    @abc.abstractmethod
    async def cancel(self, job_id: str, queue: str) -> bool:
        """Cancel a queued, scheduled or running job; False if it had already finished."""

    @abc.abstractmethod
    async def watch_cancellations(self, on_cancel: Callable[[str], None]) -> None:
        """Call ``on_cancel(job_id)`` for each cancellation request, until cancelled."""

    @abc.abstractmethod
    async def heartbeat(self, worker: WorkerInfo, ttl: float) -> None:
        """Record that ``worker`` is alive, for ``ttl`` seconds."""

    @abc.abstractmethod
    async def deregister(self, worker_id: str) -> None:
        """A worker's clean stop: it is not listed, not even as gone."""

    @abc.abstractmethod
    async def workers(self, *, include_gone: bool = False) -> list[WorkerInfo]:
        """Workers whose last heartbeat is younger than its TTL; with ``include_gone``, also
        those whose heartbeat expired within ``GONE_RETENTION`` (``gone=True``) and that did
        not deregister."""

    async def set_progress(self, job_id: str, queue: str, progress: Progress) -> None:
        """Store a running job's progress on its record (a record that is gone stays gone)."""
        raise NotImplementedError(f"{type(self).__name__} cannot store progress")

    async def claim_slot(self, schedule: str, slot: datetime, ttl: float, job_id: str = "") -> bool:
        """Claim ``slot`` of ``schedule``, whose job is ``job_id``, for ``ttl`` seconds: True
        for exactly one caller (across every process of the broker), False for the rest and
        for a slot claimed before. The winner's slot becomes the schedule's last slot (with
        its job) if it is later."""
        raise NotImplementedError(f"{type(self).__name__} cannot claim periodic slots")

    async def schedule_state(self, schedule: str) -> ScheduleState:
        """The latest slot of ``schedule`` claimed within the claims' ``ttl`` (in UTC) and its
        job, and whether the schedule is paused."""
        raise NotImplementedError(f"{type(self).__name__} cannot claim periodic slots")

    async def pause_schedule(self, schedule: str, paused: bool) -> None:
        """Pause (``paused=True``) or resume a schedule, for every worker; kept until changed."""
        raise NotImplementedError(f"{type(self).__name__} cannot pause schedules")

    async def take_rate_permits(self, requests: Sequence[RateRequest]) -> list[float]:
        """Take a permit for each request, in order, each one atomic step on the store's
        clock (the same for every worker): 0.0 where it was taken; where the limit is
        reached, the seconds until the oldest permit in the window leaves it (nothing is
        taken then). Each key's log expires once ``per`` seconds pass without a permit, so
        quiet keys take no room. All in one round trip. A refused request's wait counts
        the callers already refused and waiting on its key: the n-th waits for the n-th
        permit to come free."""
        raise NotImplementedError(f"{type(self).__name__} cannot take rate permits")

    async def take_concurrency_permits(self, requests: Sequence[ConcurrencyRequest]) -> list[float]:
        """Take a permit for each request, in order, each one atomic step: 0.0 where it was
        taken (or its holder already held it: renewed), else the seconds to wait before
        asking again (nothing is taken then). Permits whose lease ran out are free again.
        All in one round trip."""
        raise NotImplementedError(f"{type(self).__name__} cannot take concurrency permits")

    async def take_order_tickets(self, keys: Sequence[str]) -> list[int]:
        """A place in line for each key, in order (1, 2, 3, ... per key, a key given twice
        gets two), for jobs of a concurrency limit of 1 that start in enqueue order: a
        request with a ticket is refused while an earlier ticket of its key has not started,
        unless that one has not asked for ``ORDER_SKIP_AFTER`` seconds (it was cancelled,
        or lost): then the line moves on past it. A ticket below the line's head (a retry)
        only needs a free permit. All in one round trip."""
        raise NotImplementedError(f"{type(self).__name__} cannot order jobs")

    async def void_order_tickets(self, tickets: Sequence[tuple[str, int]]) -> None:
        """Tickets whose jobs will never ask (an enqueue that stored nothing): the line
        skips them instead of waiting for them."""
        raise NotImplementedError(f"{type(self).__name__} cannot order jobs")

    async def renew_concurrency_permits(self, permits: Sequence[Permit], lease: float) -> None:
        """Extend the lease of permits still held, to ``lease`` seconds from now."""
        raise NotImplementedError(f"{type(self).__name__} cannot renew concurrency permits")

    async def release_concurrency_permits(
        self, permits: Sequence[Permit], held_for: Sequence[float]
    ) -> None:
        """Give permits back (``held_for``: how long each was held, for the refusals'
        estimate of the wait)."""
        raise NotImplementedError(f"{type(self).__name__} cannot release concurrency permits")

    async def last_slot(self, schedule: str) -> datetime | None:
        """The latest slot of ``schedule`` claimed within the claims' ``ttl``, in UTC."""
        return (await self.schedule_state(schedule)).last_slot


class MissingStore(JobStore):
    """The store of a backend configured without one: every call raises
    :class:`~asyncq.errors.ConfigurationError` with ``hint`` (which option to add)."""

    available: ClassVar[bool] = False

    def __init__(self, hint: str) -> None:
        self.hint = hint

    def _refuse(self, what: str) -> NoReturn:
        raise ConfigurationError(f"{what} needs a job record store: {self.hint}")

    async def job_info(self, job_id: str, queue: str) -> JobInfo | None:
        self._refuse("reading a job's status or result")

    async def wait_finished(self, job_id: str, queue: str, timeout: float | None) -> JobInfo | None:
        self._refuse("waiting for a job's result")

    async def cancel(self, job_id: str, queue: str) -> bool:
        self._refuse("cancelling a job")

    async def watch_cancellations(self, on_cancel: Callable[[str], None]) -> None:
        self._refuse("watching for cancellations")

    async def heartbeat(self, worker: WorkerInfo, ttl: float) -> None:
        self._refuse("a worker heartbeat")

    async def deregister(self, worker_id: str) -> None:
        self._refuse("deregistering a worker")

    async def workers(self, *, include_gone: bool = False) -> list[WorkerInfo]:
        self._refuse("listing workers")

    async def set_progress(self, job_id: str, queue: str, progress: Progress) -> None:
        self._refuse("reporting a job's progress")

    async def claim_slot(self, schedule: str, slot: datetime, ttl: float, job_id: str = "") -> bool:
        self._refuse("firing a periodic schedule")

    async def schedule_state(self, schedule: str) -> ScheduleState:
        self._refuse("reading a schedule's last slot")

    async def take_rate_permits(self, requests: Sequence[RateRequest]) -> list[float]:
        self._refuse("taking a rate-limit permit")

    async def take_concurrency_permits(self, requests: Sequence[ConcurrencyRequest]) -> list[float]:
        self._refuse("taking a concurrency-limit permit")

    async def renew_concurrency_permits(self, permits: Sequence[Permit], lease: float) -> None:
        self._refuse("renewing a concurrency-limit permit")

    async def take_order_tickets(self, keys: Sequence[str]) -> list[int]:
        self._refuse("enqueueing a job that starts in enqueue order (a concurrency limit of 1)")

    async def void_order_tickets(self, tickets: Sequence[tuple[str, int]]) -> None:
        self._refuse("voiding an order ticket")

    async def release_concurrency_permits(
        self, permits: Sequence[Permit], held_for: Sequence[float]
    ) -> None:
        self._refuse("releasing a concurrency-limit permit")

    async def pause_schedule(self, schedule: str, paused: bool) -> None:
        self._refuse("pausing a schedule")
