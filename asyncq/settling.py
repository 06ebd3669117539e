"""The worker's settlements on their way to the broker: batched, retried, and waited for.

Finished attempts are handed over with ``put`` (no await: the runner moves on at once);
``run`` settles them in batches, so whatever finished while one round trip was in flight
goes in the next. ``flushed`` waits until everything handed over so far is settled (burst
mode asks the broker whether the queues are drained only then); ``close`` and ``done``
end it at shutdown.
"""

from __future__ import annotations

import logging
import math

import anyio

from .backend import Backend
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
        self._flushed = anyio.Event()
        self._done = anyio.Event()

    def put(self, settlement: Settlement) -> None:
        self._unsettled += 1
        self._send.send_nowait(settlement)

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
                    while len(batch) < _BATCH:
                        try:
                            batch.append(receive.receive_nowait())
                        except (anyio.WouldBlock, anyio.EndOfStream):
                            break
                    await self._settle(batch)
                    self._unsettled -= len(batch)
                    if not self._unsettled:
                        self._flushed.set()
                        self._flushed = anyio.Event()
        finally:
            self._done.set()

    async def _settle(self, batch: list[Settlement]) -> None:
        for attempt in range(1, _TRIES + 1):
            try:
                await self._backend.settle(batch)
                return
            except BrokerError as exc:
                log.warning(
                    "settling %d job(s) failed (try %d of %d): %s", len(batch), attempt, _TRIES, exc
                )
                await anyio.sleep(min(0.2 * 2**attempt, 5.0))
        # Unsettled jobs are not lost: the broker delivers them again after their lease.
        log.error("gave up settling %d job(s); they will be delivered again", len(batch))
