"""Waiting for a ``sqlite://`` file to change, by this process or by another.

Inside one process a change is known when it is made: each commit wakes the waiters at
once. Another process's commits are seen through ``PRAGMA data_version``, a counter that
moves when another connection commits: reading it costs a few microseconds and no I/O, so
a look every ``FAST_LOOK`` seconds while the file is busy is cheap, and the look backs off
as the file stays quiet (one look per 5% of the quiet time so far, up to ``SLOW_LOOK``):
SQLite has no way to notify another process, so this timer is unavoidable.

Only one coroutine looks at a time, whoever holds the seat: a worker's fetcher, a producer
awaiting a result, a cancellation watcher. The others wait for their own events; when the
one seated leaves, it wakes them all and one of them takes the seat. No background task is
needed, nothing outlives its waiter, and a wait costs no task of its own (a task group per
wait took a quarter of a millisecond to wake).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import anyio

from .database import Database

__all__ = ["FAST_LOOK", "SLOW_LOOK", "Watch"]

FAST_LOOK = 0.001
"""Seconds between looks at another process's commits while the file is busy."""
SLOW_LOOK = 0.1
"""Seconds between looks once it has been quiet for ``20 * SLOW_LOOK`` (2 s): an idle
worker's looks then cost well under 1% of a core (a timer's wake-up alone costs about
0.3 ms of CPU on a small VM), and the first job after a quiet spell waits at most this."""


class Watch:
    def __init__(self, db: Database, on_outside_change: Callable[[], Awaitable[None]]) -> None:
        self._db = db
        self._on_outside_change = on_outside_change
        self._seated = False
        """Whether a waiter looks at the file's version (the others wait on their events)."""
        self._followers: set[anyio.Event] = set()
        # Made when someone waits for them, so a change nobody waits for costs no event.
        self._changed: anyio.Event | None = None
        self._poke: anyio.Event | None = None
        self._version = -1
        self._last_change = time.monotonic()
        self.looks = 0
        """How many looks at ``data_version`` were made (for the idle-cost measurement)."""

    def start(self) -> None:
        """Take the file's current version as the one seen (after the database opens)."""
        self._version = self._db.data_version()
        self._changed = self._poke = None  # a new event loop's, when first waited on

    def next_change(self) -> anyio.Event:
        """The event the next change sets: take it before reading what the wait is for, so
        a change made between the read and the wait is not missed."""
        if self._changed is None:
            self._changed = anyio.Event()
        return self._changed

    def changed(self) -> None:
        """This process changed the file: wake every waiter for a change."""
        self._last_change = time.monotonic()
        self._wake()
        self.poke()

    def poke(self) -> None:
        """Look at the file's version now (another connection of this process committed)."""
        poke, self._poke = self._poke, None
        if poke is not None:
            poke.set()

    def _wake(self) -> None:
        changed, self._changed = self._changed, None
        if changed is not None:
            changed.set()

    async def until(self, event: anyio.Event, timeout: float | None) -> None:
        """Wait until ``event`` is set or ``timeout`` passes, looking at the file's version
        if nobody else is. It may also return early, when the one who looked leaves (its
        wait is over) and hands the looking on: callers check again and wait again."""
        with anyio.move_on_after(timeout):
            if event.is_set():
                return
            if self._seated:
                self._followers.add(event)
                try:
                    await event.wait()
                finally:
                    self._followers.discard(event)
                return
            self._seated = True
            try:
                await self._look(event)
            finally:
                self._seated = False
                # Whoever waits next takes the seat: wake them all (they check again).
                followers, self._followers = self._followers, set()
                for follower in followers:
                    follower.set()
                self._wake()

    async def _look(self, event: anyio.Event) -> None:
        while not event.is_set():
            quiet = time.monotonic() - self._last_change
            if self._poke is None:
                self._poke = anyio.Event()
            with anyio.move_on_after(min(max(quiet / 20, FAST_LOOK), SLOW_LOOK)):
                await self._poke.wait()
            if event.is_set():
                return
            self.looks += 1
            version = self._db.data_version()
            if version == self._version:
                continue
            self._version = version
            self._last_change = time.monotonic()
            await self._on_outside_change()
            self._wake()
