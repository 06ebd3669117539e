"""The rate and concurrency limits of a ``memory://`` broker: the same semantics as the Redis
scripts (see :mod:`asyncq.store`), on this process's clock."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from .records import ConcurrencyRequest, Permit, RateRequest
from .store import ORDER_SKIP_AFTER

__all__ = ["MemoryLimits", "concurrency_wait"]

_SWEEP_EVERY = 1024  # calls between sweeps of the keys gone quiet
_UNKNOWN_HOLD = 0.1  # seconds: the assumed hold of a key none has released yet
_MIN_WAIT, _MAX_WAIT = 0.01, 30.0
_GONE = 2.0  # seconds after its time: a waiter that has not come back never will


def _grace(per: float) -> float:
    """How long after its time a waiter that has not come back is given up (cancelled, lost)."""
    return max(1.0, min(per, 10.0))


def concurrency_wait(hold: float | None, limit: int, waiting: int) -> float:
    """How long a refused caller waits before asking again: one typical hold of the key's
    permits per ``limit`` callers already waiting ahead of it."""
    typical = _UNKNOWN_HOLD if hold is None else hold
    return min(max(typical * (1 + waiting // limit), _MIN_WAIT), _MAX_WAIT)


@dataclass(slots=True)
class _RateKey:
    per: float
    log: deque[float] = field(default_factory=deque)
    """When the permits in the window were taken, oldest first."""
    waiting: dict[str, float] = field(default_factory=dict)
    """The refused callers' tokens, and when each was told to come back."""


@dataclass(slots=True)
class _ConcurrencyKey:
    holders: dict[str, float] = field(default_factory=dict)
    """Holder -> when its lease runs out."""
    waiting: dict[str, float] = field(default_factory=dict)
    """The refused holders, and when each was told to come back."""
    hold: float | None = None
    """A moving average of how long permits were held."""
    touched: float = 0.0


@dataclass(slots=True)
class _Line:
    """The enqueue order of one key whose jobs start one at a time, in that order."""

    issued: int = 0
    """The last ticket given out."""
    head: int = 1
    """The ticket whose turn it is (the lowest not started, less the voided)."""
    seen: float = 0.0
    """When the line last moved, or its head last asked."""
    voided: set[int] = field(default_factory=set)

    def place(self, ticket: int, now: float) -> int:
        """How many of the line are ahead of ``ticket`` (0: its turn, or a retry's)."""
        while self.head in self.voided:
            self.voided.discard(self.head)
            self.head, self.seen = self.head + 1, now
        if ticket == self.head:
            self.seen = now
        elif ticket > self.head and now - self.seen > ORDER_SKIP_AFTER:
            self.head, self.seen = ticket, now  # the ones ahead never came: move on
        return max(ticket - self.head, 0)

    def started(self, ticket: int, now: float) -> None:
        if ticket >= self.head:
            self.head, self.seen = ticket + 1, now


class MemoryLimits:
    """The limit state of one broker, shared by every backend built from it."""

    def __init__(self) -> None:
        self.rates: dict[str, _RateKey] = {}
        self.concurrency: dict[str, _ConcurrencyKey] = {}
        self.lines: dict[str, _Line] = {}
        self._calls = 0

    def take_rate(self, requests: Sequence[RateRequest]) -> list[float]:
        out = []
        for request in requests:
            now = time.time()
            limit, per, token = request.limit, request.per, request.token
            state = self.rates.get(request.key)
            if state is None:
                state = self.rates[request.key] = _RateKey(per)
            state.per = per
            log, waiting = state.log, state.waiting
            while log and log[0] <= now - per:  # out of the window
                log.popleft()
            given_up = now - _grace(per)
            for stale in [t for t, at in waiting.items() if at <= given_up]:
                del waiting[stale]
            taken, ahead, returning = len(log), len(waiting), token in waiting
            # A free permit goes to a waiter coming back, or to a newcomer if it leaves
            # enough for every waiter still to come: newcomers do not jump the line.
            if (returning and taken < limit) or taken + ahead < limit:
                waiting.pop(token, None)
                log.append(now)
                out.append(0.0)
                continue
            if returning:  # permits come free later than foretold: it keeps its place
                at = log[taken - limit]
            else:  # behind everyone: the window and the waiters' times make one log
                i = taken + ahead - limit
                at = log[i] if i < taken else sorted(waiting.values())[i - taken]
            wait = max(at + per - now, 1e-6)
            waiting[token] = now + wait
            out.append(wait)
        self._sweep()
        return out

    def take_concurrency(self, requests: Sequence[ConcurrencyRequest]) -> list[float]:
        out = []
        for request in requests:
            now = time.time()
            state = self.concurrency.setdefault(request.key, _ConcurrencyKey())
            state.touched = now
            holders = state.holders
            for holder in [h for h, until in holders.items() if until <= now]:
                del holders[holder]  # a lost worker's permit: its lease ran out
            waiting = state.waiting
            for stale in [h for h, at in waiting.items() if at <= now - _GONE]:
                del waiting[stale]
            ticket, line, ahead_in_line = request.ticket, None, 0
            if ticket is not None:
                line = self.lines.setdefault(request.key, _Line(seen=now))
                ahead_in_line = line.place(ticket, now)
            if not ahead_in_line and (request.holder in holders or len(holders) < request.limit):
                holders[request.holder] = now + request.lease
                waiting.pop(request.holder, None)
                if line is not None and ticket is not None:
                    line.started(ticket, now)
                out.append(0.0)
                continue
            if ahead_in_line:  # not its turn: one typical hold per job ahead of it
                wait = concurrency_wait(state.hold, 1, ahead_in_line - 1)
                out.append(wait)
                continue
            # A waiter refused again keeps its place in the line; a newcomer goes to its end.
            if request.holder in waiting:
                ahead = sorted(waiting.values()).index(waiting[request.holder])
            else:
                ahead = len(waiting)
            wait = concurrency_wait(state.hold, request.limit, ahead)
            waiting[request.holder] = now + wait
            out.append(wait)
        self._sweep()
        return out

    def take_tickets(self, keys: Sequence[str]) -> list[int]:
        out = []
        for key in keys:
            line = self.lines.setdefault(key, _Line(seen=time.time()))
            line.issued += 1
            out.append(line.issued)
        return out

    def void_tickets(self, tickets: Sequence[tuple[str, int]]) -> None:
        for key, ticket in tickets:
            line = self.lines.get(key)
            if line is not None and ticket >= line.head:
                line.voided.add(ticket)

    def renew_concurrency(self, permits: Sequence[Permit], lease: float) -> None:
        until = time.time() + lease
        for permit in permits:
            state = self.concurrency.get(permit.key)
            if state is not None and permit.holder in state.holders:
                state.holders[permit.holder] = until

    def release_concurrency(self, permits: Sequence[Permit], held_for: Sequence[float]) -> None:
        for permit, held in zip(permits, held_for, strict=True):
            state = self.concurrency.get(permit.key)
            if state is None:
                continue
            state.holders.pop(permit.holder, None)
            state.hold = held if state.hold is None else 0.8 * state.hold + 0.2 * held

    def _sweep(self) -> None:
        self._calls += 1
        if self._calls % _SWEEP_EVERY:
            return
        now = time.time()  # now and then: quiet keys take no room
        quiet_rates = [
            k
            for k, s in self.rates.items()
            if (not s.log or s.log[-1] <= now - s.per) and not s.waiting
        ]
        for key in quiet_rates:
            del self.rates[key]
        quiet = [
            k
            for k, s in self.concurrency.items()
            if not s.holders and s.touched < now - _MAX_WAIT and not s.waiting
        ]
        for key in quiet:
            del self.concurrency[key]
