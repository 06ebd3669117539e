"""The overview's throughput chart: the last minutes' finished attempts as stacked bars
(succeeded below, failed on top), laid out here as plain numbers so the template only
draws rectangles (an inline SVG: no script, nothing for the CSP to refuse)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from ..records import MinuteCounts
from ..throughput import MINUTE, minute_of

__all__ = ["MINUTES", "chart"]

MINUTES = 30
"""Minutes the chart shows, the current one last."""

WIDTH, HEIGHT, LEFT, BOTTOM = 1150, 170, 44, 22


def _nice_ceiling(value: int) -> int:
    """The smallest of 1, 2, 5, 10, 20, 50, ... that is at least ``value``."""
    step = 1
    while True:
        for factor in (1, 2, 5):
            if step * factor >= value:
                return step * factor
        step *= 10


def chart(counts: Sequence[MinuteCounts], now: float | None = None) -> dict[str, Any]:
    """Bars for the last :data:`MINUTES` minutes (all queues together), with the scale."""
    last = minute_of(time.time() if now is None else now)
    first = last - (MINUTES - 1) * MINUTE
    totals = {m: [0, 0] for m in range(first, last + MINUTE, MINUTE)}
    for c in counts:
        if c.minute in totals:
            totals[c.minute][0] += c.succeeded
            totals[c.minute][1] += c.failed
    top = _nice_ceiling(max([ok + bad for ok, bad in totals.values()] + [1]))
    plot_w, plot_h = WIDTH - LEFT, HEIGHT - BOTTOM
    slot = plot_w / MINUTES
    bars = []
    for i, (minute, (ok, bad)) in enumerate(sorted(totals.items())):
        x = LEFT + i * slot + 1
        ok_h = plot_h * ok / top
        bad_h = plot_h * bad / top
        bars.append(
            {
                "x": round(x, 1),
                "w": round(slot - 2, 1),
                "ok_y": round(plot_h - ok_h, 1),
                "ok_h": round(ok_h, 1),
                "bad_y": round(plot_h - ok_h - bad_h, 1),
                "bad_h": round(bad_h, 1),
                "label": time.strftime("%H:%M", time.gmtime(minute)),
                "succeeded": ok,
                "failed": bad,
            }
        )
    return {
        "width": WIDTH,
        "height": HEIGHT,
        "left": LEFT,
        "plot_h": plot_h,
        "top": top,
        "bars": bars,
        "succeeded": sum(b["succeeded"] for b in bars),
        "failed": sum(b["failed"] for b in bars),
    }
