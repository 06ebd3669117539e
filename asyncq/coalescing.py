"""Calls that are in flight together share one send: group commit for enqueues.

A web server enqueues from many requests at once. Sent one by one, each of those enqueues
pays a whole round trip of client work (a command encoded, a reply parsed, the event loop
woken) for one job. A :class:`Coalescer` lets the first caller send at once, alone, and
gathers the callers that arrive while a send is in flight into one batch, sent as soon as
a send finishes: under load a batch costs about what one job did, and with nobody else in
flight a call is sent exactly as it would be without it.

A batch is sent by its first caller, its leader, whom a cancellation does not stop once it
has joined, because the other callers' jobs travel with it (a send is bounded by the
broker client's own timeouts). A caller cancelled while its batch is on its way is in the
position of one cancelled during a round trip: its jobs may have been sent.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

import anyio
import anyio.lowlevel

__all__ = ["Coalescer"]

T = TypeVar("T")
R = TypeVar("R")

Send = Callable[[Sequence[T]], Awaitable[Sequence[R | BaseException]]]


class _Batch(Generic[T, R]):
    __slots__ = ("done", "error", "items", "results", "turn", "weight")

    def __init__(self) -> None:
        self.items: list[T] = []
        self.weight = 0
        self.turn = anyio.Event()  # its leader may send
        self.done = anyio.Event()  # results (or error) are in
        self.results: Sequence[R | BaseException] = ()
        self.error: BaseException | None = None


class Coalescer(Generic[T, R]):
    """Sends items through ``send`` with at most ``in_flight`` sends at a time; callers that
    find every send slot busy join a batch that goes out next, up to ``max_items`` items and
    ``max_weight`` in all (``weight`` weighs an item: a job's encoded size, say). ``send``
    gives one result per item, in order: a value, or an exception for that item alone (the
    caller it belongs to gets it); an exception ``send`` raises goes to every caller of the
    batch. A submission of ``max_items`` items or more is a batch already and is sent at
    once, beside whatever else is in flight.

    ``gather`` is for a ``send`` that runs without yielding (an embedded database), so that
    nobody could arrive while it is in flight: when it says True, a caller that finds the
    way clear waits one turn of the event loop before sending, with whoever joined."""

    def __init__(
        self,
        send: Send[T, R],
        *,
        in_flight: int = 1,
        max_items: int = 1000,
        max_weight: int = 8 * 1024 * 1024,
        weight: Callable[[T], int] | None = None,
        gather: Callable[[], bool] | None = None,
    ) -> None:
        if in_flight < 1 or max_items < 1:
            raise ValueError("in_flight and max_items must be >= 1")
        self._send = send
        self._slots = in_flight
        self._max_items = max_items
        self._max_weight = max_weight
        self._weight = weight
        self._gather = gather
        self._queued: deque[_Batch[T, R]] = deque()

    def waiting(self) -> bool:
        """Whether callers wait for a send slot (a batch is forming behind the sends)."""
        return bool(self._queued)

    async def submit(self, items: Sequence[T]) -> list[R]:
        """Send ``items`` (alone, or with other callers'): their results, in order; the
        first item's exception, if any, is raised."""
        return _values(await self.results(items))

    async def results(self, items: Sequence[T]) -> Sequence[R | BaseException]:
        """Like ``submit``, but each item's exception is returned in its place."""
        if len(items) >= self._max_items:
            return await self._send(items)
        if self._slots and not self._queued:  # nothing in the way: straight out
            if self._gather is None or not self._gather():
                self._slots -= 1
                try:
                    return await self._send(items)
                finally:
                    self._free_slot()
            # A send that does not wait for its broker (an embedded one) leaves no moment
            # for others to join: this caller leads a batch that goes out after one turn
            # of the event loop, with whoever arrived meanwhile.
            self._slots -= 1
            batch = _Batch[T, R]()
            batch.turn.set()
            self._queued.append(batch)
            return await self._join(items, batch, gathering=True)
        return await self._join(items)

    async def _join(
        self,
        items: Sequence[T],
        batch: _Batch[T, R] | None = None,
        *,
        gathering: bool = False,
    ) -> Sequence[R | BaseException]:
        weigh = self._weight
        weight = sum(map(weigh, items)) if weigh is not None else 0
        if batch is None:
            batch = self._queued[-1] if self._queued else None
        if (
            batch is None
            or len(batch.items) + len(items) > self._max_items
            or (batch.items and batch.weight + weight > self._max_weight)
        ):
            batch = _Batch()
            self._queued.append(batch)
        start = len(batch.items)
        leader = start == 0
        batch.items.extend(items)
        batch.weight += weight
        if leader:
            with anyio.CancelScope(shield=True):  # the others' jobs ride with this caller
                if gathering:
                    await anyio.lowlevel.checkpoint()
                await self._lead(batch)
        else:
            await batch.done.wait()
        if batch.error is not None:
            raise batch.error
        return batch.results[start : start + len(items)]

    async def _lead(self, batch: _Batch[T, R]) -> None:
        await batch.turn.wait()
        # From here on, callers arriving start the next batch.
        self._queued.popleft()
        try:
            batch.results = await self._send(batch.items)
        except BaseException as exc:  # every caller of the batch gets it
            batch.error = exc
        finally:
            batch.done.set()
            self._free_slot()

    def _free_slot(self) -> None:
        if self._queued and not self._queued[0].turn.is_set():
            self._queued[0].turn.set()  # the slot passes straight to the next batch
        else:
            self._slots += 1


def _values(results: Sequence[R | BaseException]) -> list[R]:
    values: list[R] = []
    for result in results:
        if isinstance(result, BaseException):
            raise result
        values.append(result)
    return values
