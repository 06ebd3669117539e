"""The worker's settlements on their way to the broker: batched, retried, and waited for.

Finished attempts are handed over with ``put`` (no await: the runner moves on at once);
``run`` settles them in batches, so whatever finished while one round trip was in flight
goes in the next. ``flushed`` waits until everything handed over so far is settled (burst
mode asks the broker whether the queues are drained only then); ``close`` and ``done``
end it at shutdown.

A delivery handed over is still this worker's until its settlement lands: ``held`` lists
them, and the worker keeps renewing their leases, or a batch retried through an outage
would see its jobs taken by another worker and run again. A failed batch is retried with
backoff, but early once another round trip has reached the broker again
(``broker_back``), and each retry takes along what finished meanwhile, so no settlement
waits behind a pause that is no longer needed.
"""

from __future__ import annotations

import logging
import math

import anyio

from .backend import Backend
from .delivery import Delivery
from .errors import BrokerError
from .settlement import Settlement

__all__ = ["Settler"]

log = logging.getLogger("asyncq.worker")

_BATCH = 512
_TRIES = 5


class Settler:
    def __init__(self, backend: Backend) -> None:
        self._backend = backend
        self._send, self._receive = anyio.create_memory_object_stream[Settlement](math.inf)
        self._unsettled = 0
        self._held: dict[str, Delivery] = {}
        self._flushed = anyio.Event()
        self._done = anyio.Event()
        self._back = anyio.Event()

    def put(self, settlement: Settlement) -> None:
        self._unsettled += 1
        self._held[settlement.delivery.id] = settlement.delivery
        self._send.send_nowait(settlement)

    def held(self) -> list[Delivery]:
        """The deliveries handed over and not settled yet: their leases are still ours."""
        return list(self._held.values())

    def broker_back(self) -> None:
        """Something else reached the broker after a failure: a batch waiting out its
        backoff is sent again now."""
        self._back.set()

    def close(self) -> None:
        """No more settlements: ``run`` settles what it holds, then returns."""
        self._send.close()

    async def flushed(self) -> None:
        """Wait until every settlement handed over so far has been settled."""
        while self._unsettled:
            await self._flushed.wait()

    async def done(self) -> None:
        """Wait until ``run`` has returned (after ``close``)."""
        await self._done.wait()

    async def run(self) -> None:
        receive = self._receive
        try:
            async with receive:
                async for first in receive:
                    batch = [first]
                    self._take_waiting(batch)
                    await self._settle(batch)
                    for settlement in batch:
                        self._held.pop(settlement.delivery.id, None)
                    self._unsettled -= len(batch)
                    if not self._unsettled:
                        self._flushed.set()
                        self._flushed = anyio.Event()
        finally:
            self._done.set()

    def _take_waiting(self, batch: list[Settlement]) -> None:
        receive = self._receive
        while len(batch) < _BATCH:
            try:
                batch.append(receive.receive_nowait())
            except (anyio.WouldBlock, anyio.EndOfStream):
                break

    async def _settle(self, batch: list[Settlement]) -> None:
        for attempt in range(1, _TRIES + 1):
            try:
                await self._backend.settle(batch)
                return
            except BrokerError as exc:
                log.warning(
                    "settling %d job(s) failed (try %d of %d): %s", len(batch), attempt, _TRIES, exc
                )
            if attempt == _TRIES:
                break
            # Only a recovery seen after this failure cuts the pause short.
            self._back = anyio.Event()
            with anyio.move_on_after(min(0.2 * 2**attempt, 5.0)):
                await self._back.wait()
            self._take_waiting(batch)
        # Unsettled jobs are not lost: the broker delivers them again after their lease.
        log.error("gave up settling %d job(s); they will be delivered again", len(batch))
