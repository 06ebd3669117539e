"""Fetched jobs on their way from a worker's fetch loop to its runners.

An anyio memory object stream does this too, but on every receive that has to wait it
builds an event and looks up the current task through anyio's registry, several µs per
job for a worker that runs tens of thousands of jobs a second. The worker's runners are
asyncio tasks already (see ``Worker._runner``), so this is a deque and the runners' futures.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Generic, TypeVar

__all__ = ["Handoff"]

T = TypeVar("T")


class Handoff(Generic[T]):
    """Items put here go to the runner that has waited longest, or wait for one, in order.
    Once closed, ``get`` returns what is left and then None."""

    def __init__(self) -> None:
        self._items: deque[T] = deque()
        self._waiters: deque[asyncio.Future[T | None]] = deque()
        self._closed = False

    def put(self, item: T, *, first: bool = False) -> None:
        """To the longest-waiting runner, or to the back of the line (its front: ``first``)."""
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():  # a runner cancelled while waiting has left its future
                waiter.set_result(item)
                return
        if first:
            self._items.appendleft(item)
        else:
            self._items.append(item)

    def close(self) -> None:
        self._closed = True
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)

    async def get(self) -> T | None:
        if self._items:
            return self._items.popleft()
        if self._closed:
            return None
        waiter: asyncio.Future[T | None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            # Handed an item and cancelled before it could run: the item is not lost.
            if waiter.done() and not waiter.cancelled():
                item = waiter.result()
                if item is not None:
                    self.put(item, first=True)
            raise
