"""An App's periodic jobs: registering schedules (``App.periodic``, ``App.schedule``), and
the worker service that fires them (:func:`fire_schedules`).

Every worker fires every schedule of its App; none is a leader. Each slot is enqueued once
across all of them: a worker whose clock passes a slot skips it if the store's last slot
of the schedule is that slot or a later one; otherwise it enqueues the slot's job with an
idempotency key derived from the slot (so workers racing for one slot get one job between
them) and then claims the slot in the store (``JobStore.claim_slot``), for at least a day.
The claim outlives the job: once claimed, a slot whose job died or was cancelled is not
fired again. A worker killed between the two steps loses nothing: the next worker to pass
the slot enqueues under the same key and gets the job already there.

The claim holds the slot's job id, so ``overlap=False`` can skip a slot while the last
slot's job is queued or running, and ``asyncq schedules`` can say how the last slot went. A
paused schedule (``JobStore.pause_schedule``) fires nothing; its slots pass unclaimed.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import anyio

from .errors import BrokerError
from .records import JobStatus
from .schedules import Schedule
from .task import TaskCall

if TYPE_CHECKING:
    from .app import App
    from .job import Job
    from .task import Task

__all__ = [
    "CLAIM_TTL",
    "ScheduleReport",
    "add_schedule",
    "fire_schedules",
    "report",
    "trigger",
]

log = logging.getLogger("asyncq.schedules")

CLAIM_TTL = 86400.0
"""Seconds a slot's claim is kept at least (longer for schedules whose slots are further
apart, so ``catch_up`` always finds the last one)."""


def add_schedule(
    app: App,
    task: Task[Any, Any],
    *,
    cron: str | None,
    every: float | timedelta | None,
    args: Sequence[Any],
    kwargs: Mapping[str, Any] | None,
    name: str | None,
    timezone: str | None,
    queue: str | None,
    catch_up: bool,
    overlap: bool,
) -> Schedule:
    """Check and register a schedule of ``task``; ``ValueError`` naming what is wrong."""
    schedule_name = name or task.name
    if schedule_name in app.schedules:
        raise ValueError(f"a schedule named {schedule_name!r} is already registered")
    if task.app is not app:
        raise ValueError(f"schedule {schedule_name!r}: task {task.name!r} is another App's")
    problem = task.bind_error(tuple(args), dict(kwargs or {}))
    if problem is not None:
        raise ValueError(f"schedule {schedule_name!r}: its arguments do not fit: {problem}")
    schedule = Schedule.of(
        schedule_name,
        task.name,
        cron=cron,
        every=every,
        timezone=timezone,
        args=args,
        kwargs=kwargs,
        queue=queue,
        catch_up=catch_up,
        overlap=overlap,
    )
    app.schedules[schedule_name] = schedule
    return schedule


def slot_key(schedule: Schedule, slot: datetime) -> str:
    """The idempotency key of a slot's job."""
    return f"asyncq.schedule:{schedule.name}@{slot.isoformat()}"


def claim_ttl(schedule: Schedule, slot: datetime) -> float:
    apart = (schedule.next_slot(slot) - slot).total_seconds()
    return max(CLAIM_TTL, 3 * apart)


async def fire(app: App, schedule: Schedule, slot: datetime) -> bool:
    """Enqueue ``slot``'s job unless the slot was fired already, the schedule is paused, or
    (``overlap=False``) the last slot's job is still queued or running; whether this call
    fired it."""
    store = app.backend.store
    state = await store.schedule_state(schedule.name)
    if state.paused or (state.last_slot is not None and state.last_slot >= slot):
        return False
    if not schedule.overlap and state.last_job is not None:
        busy = await store.job_info(state.last_job, schedule.queue or _task_queue(app, schedule))
        if busy is not None and not busy.status.finished:
            log.info(
                "schedule %s: slot %s skipped, the job of slot %s is still %s",
                schedule.name,
                slot,
                state.last_slot,
                busy.status,
            )
            return False
    job = await _enqueue(app, schedule, slot, key=slot_key(schedule, slot))
    won = await store.claim_slot(schedule.name, slot, claim_ttl(schedule, slot), job.id)
    if won:
        log.info("schedule %s: slot %s enqueued as job %s", schedule.name, slot, job.id)
    return won


async def trigger(app: App, name: str) -> Job[Any]:
    """Enqueue a run of schedule ``name`` now, outside its slots (``asyncq schedules
    trigger``): its job's ``scheduled_for`` is now, and no slot is claimed."""
    schedule = app.schedules.get(name)
    if schedule is None:
        raise KeyError(_unknown(app, name))
    return await _enqueue(app, schedule, now(), key=None)


def _unknown(app: App, name: str) -> str:
    known = ", ".join(sorted(app.schedules)) or "none"
    return f"no schedule named {name!r} on this App (its schedules: {known})"


async def _enqueue(app: App, schedule: Schedule, slot: datetime, *, key: str | None) -> Job[Any]:
    task = app.get_task(schedule.task)
    options = task.options(key=key, queue=schedule.queue).options
    call: TaskCall[Any, Any] = TaskCall(task, replace(options, scheduled_for=slot.timestamp()))
    return await call.enqueue(*schedule.args, **dict(schedule.kwargs))


def _task_queue(app: App, schedule: Schedule) -> str:
    return app.get_task(schedule.task).queue


def now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class ScheduleReport:
    """One schedule as ``asyncq schedules`` (and the schedule metric) show it."""

    schedule: Schedule
    next_slot: datetime
    last_slot: datetime | None
    last_job: str | None
    last_status: JobStatus | None
    """The status of the last slot's job; None when none was fired or its record expired."""
    paused: bool


async def report(app: App, schedule: Schedule) -> ScheduleReport:
    """What the store knows of ``schedule``: its last slot, that slot's job and status."""
    store = app.backend.store
    state = await store.schedule_state(schedule.name)
    status = None
    if state.last_job is not None:
        info = await store.job_info(state.last_job, schedule.queue or _task_queue(app, schedule))
        status = None if info is None else info.status
    return ScheduleReport(
        schedule,
        schedule.next_slot(now()),
        state.last_slot,
        state.last_job,
        status,
        state.paused,
    )


async def fire_schedules(app: App) -> None:
    """Fire the App's schedules at their slots, until cancelled (a worker service)."""
    schedules = list(app.schedules.values())
    if not schedules:
        return
    log.info(
        "firing %d schedule(s): %s",
        len(schedules),
        ", ".join(f"{s.name} ({_when(s)})" for s in schedules),
    )
    due: dict[str, datetime] = {}
    for schedule in schedules:
        at = now()
        due[schedule.name] = schedule.next_slot(at)
        if schedule.catch_up:
            await _catch_up(app, schedule, at)
    while True:
        at = now()
        for schedule in schedules:
            slot = due[schedule.name]
            if slot > at:
                continue
            try:
                await fire(app, schedule, slot)
            except BrokerError as exc:
                log.warning("schedule %s: slot %s not fired: %s", schedule.name, slot, exc)
            # Slots passed meanwhile (a long outage, a suspended host) are skipped.
            due[schedule.name] = schedule.next_slot(max(slot, now() - timedelta(seconds=1)))
        wait = (min(due.values()) - now()).total_seconds()
        # A slot is a moment on the clock: waiting for it is a timer, not a poll.
        await anyio.sleep(max(wait, 0.0))


def _when(schedule: Schedule) -> str:
    if schedule.cron is None:
        return f"every {schedule.every:g} s"
    return f"{schedule.cron} in {schedule.timezone}"


async def _catch_up(app: App, schedule: Schedule, at: datetime) -> None:
    """``catch_up``: fire the most recent slot missed since the last one fired, once."""
    try:
        last = await app.backend.store.last_slot(schedule.name)
        missed = schedule.previous_slot(at)
        if last is not None and missed > last:
            await fire(app, schedule, missed)
    except BrokerError as exc:
        log.warning("schedule %s: catching up failed: %s", schedule.name, exc)
