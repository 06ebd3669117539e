"""Schedules of periodic jobs: what a schedule is, and which instants (slots) it fires at.

A schedule fires either by a cron expression in a time zone, or ``every`` so many seconds,
aligned to the Unix epoch (so every worker, on any host, computes the same slots). A slot is
an instant, given as an aware ``datetime`` in UTC; a slot's identity is its schedule's name
and that instant, which is what workers claim so that each slot is enqueued once.

Cron expressions are parsed by cronsim (5 fields, or 6 with seconds first), which follows
Debian's cron, daylight saving time included; in a time zone that moves its clocks:

* **Spring forward** (02:00 becomes 03:00): a slot in the skipped hour (``30 2 * * *``)
  fires once, at the first instant after the gap (03:00 local).
* **Fall back** (03:00 becomes 02:00 again): a slot at a fixed time in the repeated hour
  (``30 2 * * *``) fires once, at its first occurrence (02:30 summer time), never twice.
  A schedule whose hour field is a wildcard (``*/30 * * * *``) fires at each of the real
  instants the repeated hour holds, which are an hour apart.

Why cronsim rather than croniter: on a fall-back day croniter 7.0 fires a fixed-time slot
in the repeated hour twice (02:30 summer time and 02:30 winter time), cronsim once; cronsim
has no dependencies (croniter needs python-dateutil), it computes a slot in about 10 µs
against croniter's 36, and it can step backwards, which ``catch_up`` needs.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

__all__ = ["Schedule"]

_NAME = re.compile(r"^[A-Za-z0-9_.:@/-]{1,200}$")


@dataclass(frozen=True, slots=True)
class Schedule:
    """One schedule: its name, the task it enqueues and with what, and when.

    Build it with :meth:`of`, which checks every field and says what is wrong.
    """

    name: str
    task: str
    cron: str | None = None
    every: float | None = None
    """Seconds between slots, aligned to the Unix epoch."""
    timezone: str = "UTC"
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    queue: str | None = None
    catch_up: bool = False
    """When a worker comes up after slots passed with no worker running: fire the most
    recent one missed (once); by default they are skipped."""
    overlap: bool = True
    """False: skip a slot while the previous slot's job is still queued or running."""

    @classmethod
    def of(
        cls,
        name: str,
        task: str,
        *,
        cron: str | None = None,
        every: float | timedelta | None = None,
        timezone: str | None = None,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        queue: str | None = None,
        catch_up: bool = False,
        overlap: bool = True,
    ) -> Schedule:
        """A checked schedule; ``ValueError`` naming what is wrong otherwise."""
        if not isinstance(name, str) or not _NAME.match(name):
            raise ValueError(
                f"schedule name {name!r}: 1-200 letters, digits or . _ - : @ / (no spaces)"
            )
        if (cron is None) == (every is None):
            raise ValueError(f"schedule {name!r}: give cron= or every=, exactly one of them")
        seconds: float | None = None
        if every is not None:
            seconds = every.total_seconds() if isinstance(every, timedelta) else every
            if isinstance(seconds, bool) or not isinstance(seconds, int | float):
                raise ValueError(f"schedule {name!r}: every= takes seconds or a timedelta")
            if not math.isfinite(seconds) or seconds < 1:
                raise ValueError(f"schedule {name!r}: every= must be at least 1 second")
            if timezone is not None:
                raise ValueError(
                    f"schedule {name!r}: every= slots are aligned to the Unix epoch; a "
                    "timezone= applies to cron= only"
                )
        zone = timezone or "UTC"
        try:
            tz = ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"schedule {name!r}: unknown time zone {zone!r} (an IANA name, such as "
                "'Europe/Berlin')"
            ) from None
        if cron is not None:
            if not isinstance(cron, str):
                raise ValueError(f"schedule {name!r}: cron= takes a string, like '*/5 * * * *'")
            try:
                CronSim(cron, datetime(2000, 1, 1, tzinfo=tz))
            except CronSimError as exc:
                raise ValueError(
                    f"schedule {name!r}: bad cron expression {cron!r}: {exc}"
                ) from None
        return cls(
            name=name,
            task=task,
            cron=cron,
            every=seconds,
            timezone=zone,
            args=tuple(args),
            kwargs=dict(kwargs or {}),
            queue=queue,
            catch_up=catch_up,
            overlap=overlap,
        )

    @property
    def when(self) -> str:
        """The schedule in words for listings: its cron and zone, or its interval."""
        if self.cron is not None:
            return f"{self.cron} ({self.timezone})"
        return f"every {self.every:g} s"

    def next_slot(self, after: datetime) -> datetime:
        """The first slot strictly after ``after`` (an aware datetime), in UTC."""
        if after.tzinfo is None:
            raise ValueError("after= must be timezone-aware")
        if self.every is not None:
            every = self.every
            stamp = after.timestamp()
            slot = (math.floor(stamp / every) + 1) * every
            return datetime.fromtimestamp(slot, UTC)
        assert self.cron is not None
        tz = ZoneInfo(self.timezone)
        start = after
        for _ in range(3):
            found = next(CronSim(self.cron, start.astimezone(tz))).astimezone(UTC)
            if found > after:
                return found
            # In a repeated local hour a local time can name an instant already passed:
            # look again from just after it.
            start = found + timedelta(seconds=1)
        raise AssertionError(f"no slot of {self.cron!r} after {after}")

    def previous_slot(self, at: datetime) -> datetime:
        """The last slot at or before ``at``, in UTC: what ``catch_up`` fires."""
        if at.tzinfo is None:
            raise ValueError("at= must be timezone-aware")
        if self.every is not None:
            every = self.every
            return datetime.fromtimestamp(math.floor(at.timestamp() / every) * every, UTC)
        assert self.cron is not None
        # cronsim's reverse iteration starts strictly before its start: a second later
        # includes ``at`` itself when it is a slot.
        local = (at + timedelta(seconds=1)).astimezone(ZoneInfo(self.timezone))
        return next(CronSim(self.cron, local, reverse=True)).astimezone(UTC)

    def slots(self, after: datetime, until: datetime) -> list[datetime]:
        """Every slot in (``after``, ``until``], in order, in UTC."""
        out: list[datetime] = []
        slot = self.next_slot(after)
        while slot <= until:
            out.append(slot)
            slot = self.next_slot(slot)
        return out
