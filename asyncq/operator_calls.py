"""The App's operator calls: queue depths, purging and removing queues, and the dead
letters, each a thin front of :class:`~asyncq.operations.Operations` with the App's default
queue filled in. A mixin of :class:`~asyncq.app.App`, kept apart so the App's module holds
what builds and runs an App."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from .operations import Operations
from .records import DeadLetter, DeadLetterFilter, QueueStats

__all__ = ["OperatorCalls"]


class OperatorCalls:
    """What an operator asks of an App's broker, across queues."""

    _operations: Operations
    default_queue: str

    @property
    def operations(self) -> Operations:
        """What operators do to this App's broker, across queues (see asyncq.operations)."""
        return self._operations

    async def queue_stats(self, queues: Sequence[str] | None = None) -> dict[str, QueueStats]:
        """Depth of each queue: the given ones, else this App's and every one the broker knows."""
        return await self._operations.queue_stats(queues)

    async def purge_queue(
        self, queue: str, *, on_progress: Callable[[int], None] | None = None
    ) -> int:
        """Cancel every job waiting in ``queue``: queued, delayed, or waiting for a retry
        (running jobs finish; dead letters stay, see ``purge_dead``). They never run, and
        their records say CANCELLED. Returns how many; ``on_progress`` hears the running
        total after each batch."""
        return await self._operations.purge_queue(queue, on_progress=on_progress)

    async def remove_queue(self, queue: str) -> None:
        """Remove an unused queue from the broker: one with no jobs (pending, scheduled,
        running or dead) that no live worker serves. Otherwise a ``ValueError`` says what
        still uses it, and nothing is removed."""
        await self._operations.remove_queue(queue)

    async def known_queues(self) -> list[str]:
        """This App's queues and every queue the broker knows of, sorted."""
        return await self._operations.known_queues()

    async def dead_letters(
        self,
        queue: str | None = None,
        *,
        limit: int = 100,
        task: str | None = None,
        older_than: float | None = None,
        newer_than: float | None = None,
    ) -> list[DeadLetter]:
        """The oldest ``limit`` dead letters of ``queue`` (default: the default queue),
        optionally only one task's, or only those that died more (``older_than``) or less
        (``newer_than``) than so many seconds ago."""
        match = DeadLetterFilter(task=task, older_than=older_than, newer_than=newer_than)
        return await self._operations.dead_letters(queue or self.default_queue, match, limit)

    async def replay_dead(
        self,
        queue: str | None = None,
        *,
        ids: Sequence[str] | None = None,
        task: str | None = None,
        older_than: float | None = None,
        newer_than: float | None = None,
        on_progress: Callable[[int], None] | None = None,
    ) -> int:
        """Send dead letters back to their queue with a fresh retry budget (attempt 1), then
        remove them from the dead-letter queue; returns how many were replayed. The filters
        are those of ``dead_letters``, plus ``ids``; ``on_progress`` hears the running total
        after each page.

        The enqueue comes before the removal, so a crash in between can duplicate a job but
        never lose one."""
        match = DeadLetterFilter(ids, task, older_than, newer_than)
        queue = queue or self.default_queue
        return await self._operations.replay_dead(queue, match, on_progress=on_progress)

    async def purge_dead(
        self,
        queue: str | None = None,
        *,
        ids: Sequence[str] | None = None,
        task: str | None = None,
        older_than: float | None = None,
        newer_than: float | None = None,
        on_progress: Callable[[int], None] | None = None,
    ) -> int:
        """Delete dead letters: all of the queue, or those the filters of ``replay_dead``
        choose. Returns how many were deleted."""
        match = DeadLetterFilter(ids, task, older_than, newer_than)
        queue = queue or self.default_queue
        return await self._operations.purge_dead(queue, match, on_progress=on_progress)
