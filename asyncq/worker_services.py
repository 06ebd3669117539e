"""The loops a worker runs beside its jobs for as long as it serves: its services.

Each is a :class:`WorkerService` in ``worker.services``; a feature joins by adding one. A
service's ``wanted()`` is asked once the App is open (so it can look at the connected
backend), and the service runs in the worker's task group until the worker stops.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import anyio

from .errors import BrokerError
from .periodic import ScheduleReport, fire_schedules, report
from .records import WorkerInfo
from .recycling import watch_memory
from .retention import bounds_dead_letters, trim_dead_letters

if TYPE_CHECKING:
    from .worker import Worker

__all__ = ["WorkerService", "default_services"]

log = logging.getLogger("asyncq.worker")


def _always() -> bool:
    return True


@dataclass(frozen=True, slots=True)
class WorkerService:
    """A named loop that runs as long as the worker serves."""

    name: str
    run: Callable[[], Coroutine[Any, Any, None]]
    wanted: Callable[[], bool] = _always
    """Whether the worker runs it, asked when it starts serving."""


def default_services(worker: Worker) -> list[WorkerService]:
    """Heartbeats, lease renewal, cancellation requests, the broker's upkeep, periodic
    schedules, and the queue depths and schedules for metrics."""

    def backend_has_store() -> bool:
        return worker.app.backend.store.available

    def leases_need_renewal() -> bool:
        return bool(worker.app.backend.lease_renewal_interval)

    async def watch_cancellations() -> None:
        await worker.app.backend.store.watch_cancellations(worker.on_cancel_request)

    def fires_schedules() -> bool:
        app = worker.app
        return worker.schedules and bool(app.schedules) and app.backend.store.available

    async def maintain() -> None:
        await worker.app.backend.maintain(worker.queues)

    max_memory = worker.options.max_memory

    return [
        WorkerService("heartbeat", partial(heartbeat, worker), backend_has_store),
        WorkerService("lease renewal", partial(renew_leases, worker), leases_need_renewal),
        WorkerService("cancellations", watch_cancellations, backend_has_store),
        WorkerService("upkeep", maintain),
        WorkerService(
            "dead-letter retention",
            partial(trim_dead_letters, worker),
            partial(bounds_dead_letters, worker),
        ),
        WorkerService(
            "memory limit",
            partial(watch_memory, worker, max_memory or 0),
            lambda: max_memory is not None,
        ),
        WorkerService("schedules", partial(fire_schedules, worker.app), fires_schedules),
        WorkerService("queue depths", partial(poll_depths, worker), lambda: bool(worker.metrics)),
        WorkerService(
            "schedule metrics",
            partial(poll_schedules, worker),
            lambda: bool(worker.metrics) and fires_schedules(),
        ),
    ]


async def heartbeat(worker: Worker) -> None:
    """Beat every ``heartbeat_interval``, and also within a second of a change in the jobs
    held, so what `asyncq workers` lists agrees with the queues' own counts."""
    store = worker.app.backend.store
    host, pid = socket.gethostname(), os.getpid()
    interval = worker.heartbeat_interval
    sent: int | None = None
    due = 0.0
    while True:
        held = len(worker.running)
        if held != sent or anyio.current_time() >= due:
            info = WorkerInfo(
                id=worker.id,
                host=host,
                pid=pid,
                queues=worker.queues,
                concurrency=worker.concurrency,
                in_flight=held,
                started_at=worker.started_at,
            )
            try:
                await store.heartbeat(info, ttl=interval * 3)
                sent = held
            except BrokerError as exc:
                log.warning("heartbeat failed: %s", exc)
            due = anyio.current_time() + interval
        # A liveness signal is periodic; the one-second look at the count bounds both how
        # stale the listing gets and how often a busy worker writes (once a second).
        await anyio.sleep(min(1.0, interval))


async def renew_leases(worker: Worker) -> None:
    """Keep the claim on every held delivery fresh, every ``lease_renewal_interval``: the
    running ones, and the finished ones whose settlements have not landed yet."""
    backend = worker.app.backend
    interval = backend.lease_renewal_interval
    assert interval is not None
    failed = False
    while True:
        await anyio.sleep(interval)  # a lease is time-based, so renewal is a timer
        held = worker.held_deliveries()
        if held:
            try:
                await backend.renew(held)
            except BrokerError as exc:
                log.warning("lease renewal failed: %s", exc)
                failed = True
                continue
            if failed:
                failed = False
                worker.broker_back()


async def poll_depths(worker: Worker) -> None:
    metrics = worker.metrics
    assert metrics is not None
    stats = partial(worker.app.backend.queue_stats, worker.queues)
    await metrics.poll_depths(stats, worker.metrics_interval)


async def poll_schedules(worker: Worker) -> None:
    metrics, app = worker.metrics, worker.app
    assert metrics is not None

    async def reports() -> list[ScheduleReport]:
        return [await report(app, s) for s in app.schedules.values()]

    await metrics.poll_schedules(reports, worker.metrics_interval)
