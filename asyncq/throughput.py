"""Per-minute counts of finished attempts, for the dashboard's throughput chart.

Each backend adds a settled batch's counts to its per-minute counters in the round trip
that settles the batch (a Redis script call beside the settle's, a statement in the same
transaction), so the counting costs no round trip of its own; the counters go after
:data:`KEPT` seconds. A settlement that turns out stale (its job was delivered again) is
still counted: these are a chart's numbers, not an audit."""

from __future__ import annotations

from collections.abc import Sequence

from .settlement import Outcome, Settlement

__all__ = ["KEPT", "MINUTE", "count_batch", "minute_of"]

MINUTE = 60
KEPT = 3600
"""Seconds a minute's counters are kept: the last hour."""

_SUCCEEDED, _FAILED = Outcome.SUCCEEDED, (Outcome.RETRY, Outcome.DEAD)


def minute_of(now: float) -> int:
    """The start of ``now``'s minute, in epoch seconds."""
    return int(now // MINUTE) * MINUTE


def count_batch(settlements: Sequence[Settlement]) -> dict[str, tuple[int, int]]:
    """Per queue, how many of ``settlements`` succeeded and how many failed; queues with
    neither are left out (a release, snooze or deferral is not an end)."""
    counts: dict[str, list[int]] = {}
    for s in settlements:
        outcome = s.outcome
        if outcome is _SUCCEEDED:
            counts.setdefault(s.delivery.queue, [0, 0])[0] += 1
        elif outcome in _FAILED:
            counts.setdefault(s.delivery.queue, [0, 0])[1] += 1
    return {queue: (n[0], n[1]) for queue, n in counts.items()}
