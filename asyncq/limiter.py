"""Admission: a job of a task with a rate or concurrency limit starts only with a permit.

A runner asks the limiter just before it would call the handler, so a permit is taken
when the job starts, not while it waits in the prefetch (which would let a late start
fall into a later window). The requests of runners asking at once share one round trip
(a :class:`~asyncq.coalescing.Coalescer` per kind). A job refused a permit is settled
DEFER: it goes back to its queue unstarted, spending no attempt, until the store says a
permit can be had, and its runner moves on to the next job. Jobs of tasks without limits
never come here.

A concurrency permit is the job's for as long as it runs: renewed here every third of its
lease (a SIGKILLed worker's permits come back when their leases run out) and given back as
soon as the handler returns, whatever the outcome (a shutdown's released jobs included).
When a task has both limits, the concurrency permit is taken first, and given back if the
rate refuses: a rate permit, once taken, counts as a start.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import anyio

from .coalescing import Coalescer
from .errors import BrokerError, ConfigurationError
from .limits import ORDER_HEADER
from .records import ConcurrencyRequest, Permit, RateRequest

if TYPE_CHECKING:
    from .attempt import Attempt
    from .backend import Backend
    from .metrics import WorkerMetrics

__all__ = ["Limiter", "Refusal"]

log = logging.getLogger("asyncq.limits")

PERMIT_LEASE = 30.0
"""Seconds a concurrency permit is held without renewal on a backend without leases of its
own (RabbitMQ); elsewhere a permit's lease is the job's (``visibility_timeout``)."""

RATE_BATCH = 8
"""Rate permits asked for in one round trip at the most."""

START_SLACK = 0.01
"""Seconds a rate's window is stretched by (1% of it at most), for the time between a
permit and its start."""

_ERROR_WAIT = 1.0  # a store that cannot be asked: the job waits this long and asks again


class Refusal:
    """Why a job may not start yet, and for how long."""

    __slots__ = ("limit", "wait")

    def __init__(self, limit: str, wait: float) -> None:
        self.limit = limit
        """ "rate" or "concurrency"."""
        self.wait = wait


class Limiter:
    def __init__(self, backend: Backend, metrics: WorkerMetrics | None) -> None:
        store = backend.store
        if not store.available:
            hint = getattr(store, "hint", "")
            raise ConfigurationError(f"rate and concurrency limits need a job record store: {hint}")
        self._store = store
        self._metrics = metrics
        interval = backend.lease_renewal_interval
        self.lease = interval * 3 if interval else PERMIT_LEASE
        """How long a concurrency permit holds without renewal."""
        # Few per round trip: the runners of one reply start one after another on this event
        # loop, and the last of a large batch would start well after its permit.
        self._rates: Coalescer[RateRequest, float] = Coalescer(
            store.take_rate_permits, max_items=RATE_BATCH
        )
        self._permits: Coalescer[ConcurrencyRequest, float] = Coalescer(
            store.take_concurrency_permits
        )
        self.held: dict[str, tuple[Permit, float]] = {}
        """Job id -> the concurrency permit it holds and when it took it (monotonic)."""
        self._released: list[tuple[Permit, float]] = []
        self._wake = anyio.Event()

    async def admit(self, attempt: Attempt) -> Refusal | None:
        """None: the job may start (holding its concurrency permit, if it has a limit);
        else why not and how long to wait."""
        task, msg = attempt.task, attempt.message
        assert task is not None and msg is not None
        job_id = attempt.job_id
        try:
            concurrency = task.concurrency_limit
            if concurrency is not None:
                name = task.limits.concurrency(msg.args, msg.kwargs)
                ticket = msg.headers.get(ORDER_HEADER) if task.ordered else None
                request = ConcurrencyRequest(
                    name,
                    concurrency.limit,
                    job_id,
                    self.lease,
                    int(ticket) if ticket and ticket.isdigit() else None,
                )
                (wait,) = await self._permits.submit([request])
                if wait:
                    return self._refused(attempt, "concurrency", wait)
                self.held[job_id] = (Permit(name, job_id), time.monotonic())
            rate = task.rate_limit
            if rate is not None:
                name = task.limits.rate(msg.args, msg.kwargs)
                # The same for this attempt when it comes back after a refusal: its place.
                token = f"{job_id}:{msg.attempt}"
                # A start runs a little after its permit (the reply's way back, a runner's
                # wake-up), by a varying few ms: a slightly longer window keeps the starts,
                # not just the permits, within the limit.
                per = rate.per + min(START_SLACK, rate.per * 0.01)
                (wait,) = await self._rates.submit([RateRequest(name, rate.limit, per, token)])
                if wait:
                    self.release(job_id)
                    return self._refused(attempt, "rate", wait)
        except BrokerError as exc:
            self.release(job_id)
            log.warning("could not take a permit for job %s, trying again: %s", job_id, exc)
            return Refusal("unavailable", _ERROR_WAIT)
        return None

    def _refused(self, attempt: Attempt, limit: str, wait: float) -> Refusal:
        if self._metrics is not None:
            self._metrics.limited(attempt.queue, attempt.task.name if attempt.task else "", limit)
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "job %s %s on %s waits %.3f s for its %s limit",
                attempt.job_id,
                attempt.task.name if attempt.task else "?",
                attempt.queue,
                wait,
                limit,
                extra={"job": {"job_id": attempt.job_id, "limit": limit, "wait_s": wait}},
            )
        return Refusal(limit, wait)

    def release(self, job_id: str) -> None:
        """The job ended (or was refused by its rate): its concurrency permit goes back."""
        held = self.held.pop(job_id, None)
        if held is not None:
            permit, since = held
            self._released.append((permit, time.monotonic() - since))
            self._wake.set()

    async def run(self) -> None:
        """Give permits back as jobs end, and renew the ones held, until cancelled."""
        renew_every = self.lease / 3
        renew_at = anyio.current_time() + renew_every
        while True:
            with anyio.move_on_after(max(renew_at - anyio.current_time(), 0.0)):
                await self._wake.wait()
            self._wake = anyio.Event()
            if self._released:
                batch, self._released = self._released, []
                await self._give_back(batch)
            if anyio.current_time() >= renew_at:
                renew_at = anyio.current_time() + renew_every
                if self.held:
                    permits = [permit for permit, _ in self.held.values()]
                    try:
                        await self._store.renew_concurrency_permits(permits, self.lease)
                    except BrokerError as exc:
                        log.warning("could not renew %d permit(s): %s", len(permits), exc)

    async def close(self) -> None:
        """At shutdown: give back whatever is still to be given back."""
        for job_id in list(self.held):
            self.release(job_id)
        if self._released:
            batch, self._released = self._released, []
            await self._give_back(batch)

    async def _give_back(self, batch: Sequence[tuple[Permit, float]]) -> None:
        permits: list[Permit] = [p for p, _ in batch]
        held_for: list[float] = [h for _, h in batch]
        try:
            await self._store.release_concurrency_permits(permits, held_for)
        except BrokerError as exc:  # their leases run out instead
            log.warning(
                "could not give back %d permit(s); they come back within %g s: %s",
                len(permits),
                self.lease,
                exc,
            )


def wants_limiter(tasks: Sequence[Any]) -> bool:
    """Whether any of the tasks a worker serves has a limit."""
    return any(task.limited for task in tasks)
