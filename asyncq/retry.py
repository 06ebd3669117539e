"""Retry delays: exponential backoff with full jitter, capped."""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["Backoff"]


@dataclass(frozen=True, slots=True)
class Backoff:
    """The delay before retry ``n`` is uniform in ``[0, min(cap, base * factor ** (n - 1))]``.

    Full jitter spreads a burst of failures over the whole window, so a broker or a
    downstream service that failed many jobs at once is not hit by all of them again at
    the same instant. ``jitter=False`` gives the plain exponential ceiling (useful in tests).
    """

    base: float = 1.0
    factor: float = 2.0
    cap: float = 300.0
    jitter: bool = True

    def __post_init__(self) -> None:
        if self.base < 0 or self.cap < 0:
            raise ValueError("Backoff base and cap must be >= 0")
        if self.factor < 1:
            raise ValueError("Backoff factor must be >= 1")

    def ceiling(self, retry: int) -> float:
        """The largest delay for the ``retry``-th retry (1-based)."""
        try:
            return min(self.cap, self.base * self.factor ** max(retry - 1, 0))
        except OverflowError:  # factor ** retry is past any float, so past the cap too
            return self.cap

    def delay(self, retry: int) -> float:
        ceiling = self.ceiling(retry)
        return random.uniform(0.0, ceiling) if self.jitter else ceiling
