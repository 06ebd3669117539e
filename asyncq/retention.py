"""Dead-letter retention: while a backend bounds its dead-letter queues (URL options
``dead_ttl`` and ``dead_max``), every worker asks it, every ``retention_interval`` seconds,
to remove the letters past the bounds from the queues the worker serves. Each removal is
logged and counted (``asyncq.dead_letters.removed``): a dead letter never disappears
without a trace.

The removal itself is the backend's, and safe with any number of workers doing it at once:
an expired letter is removed by whichever gets to it, and a count bound is applied under
the broker's own atomicity (a Lua script on Redis, a lock on RabbitMQ).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import anyio

from .errors import BrokerError

if TYPE_CHECKING:
    from .records import TrimmedDeadLetters
    from .worker import Worker

__all__ = ["bounds_dead_letters", "trim_dead_letters"]

log = logging.getLogger("asyncq.retention")


def bounds_dead_letters(worker: Worker) -> bool:
    """Whether the worker's backend has a bound for dead letters to apply."""
    backend = worker.app.backend
    return backend.dead_ttl is not None or backend.dead_max is not None


async def trim_dead_letters(worker: Worker) -> None:
    """Apply the backend's bounds to the worker's queues, on a clock, until cancelled."""
    backend = worker.app.backend
    while True:
        try:
            trims = await backend.trim_dead(worker.queues)
        except BrokerError as exc:
            log.warning("could not apply dead-letter retention: %s", exc)
        else:
            for trim in trims:
                report(worker, trim)
        await anyio.sleep(backend.retention_interval)


def report(worker: Worker, trim: TrimmedDeadLetters) -> None:
    backend = worker.app.backend
    if trim.expired:
        log.info(
            "retention removed %d dead letter(s) of queue %s older than dead_ttl (%g s)",
            trim.expired,
            trim.queue,
            backend.dead_ttl,
        )
    if trim.beyond_max:
        log.info(
            "retention removed the %d oldest dead letter(s) of queue %s, beyond dead_max (%d)",
            trim.beyond_max,
            trim.queue,
            backend.dead_max,
        )
    if worker.metrics is not None:
        worker.metrics.trimmed(trim)
