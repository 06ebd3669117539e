"""The rate and concurrency limits of a ``memory://`` broker: the same semantics as the Redis
scripts (see :mod:`asyncq.store`), on this process's clock."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from .records import ConcurrencyRequest, Permit, RateRequest

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


class MemoryLimits:
    """The limit state of one broker, shared by every backend built from it."""

    def __init__(self) -> None:
        self.rates: dict[str, _RateKey] = {}
        self.concurrency: dict[str, _ConcurrencyKey] = {}
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
            if request.holder in holders or len(holders) < request.limit:
                holders[request.holder] = now + request.lease
                waiting.pop(request.holder, None)
                out.append(0.0)
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
