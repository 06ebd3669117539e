"""What operators do to a broker, in one place for the App, the CLI and the dashboard: queue
depths, purging and removing queues, dead letters of one queue or of every queue, workers.

Each call names one queue, or takes ``None`` for every queue that has what it works on (the
dead-letter calls: every queue with dead letters). Long operations page through the broker
and report a running total to ``on_progress``.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from .delivery import Envelope
from .records import DeadLetter, DeadLetterFilter, QueueStats, WorkerInfo
from .serializer import DecodeError, Message
from .task import _check_queue

if TYPE_CHECKING:
    from .app import App

__all__ = ["Operations"]

# Dead letters are read this many at a time; a queue is purged this many jobs a step.
_DLQ_PAGE = 500
_PURGE_BATCH = 1000

Progress = Callable[[int], None]


class Operations:
    """The operations on one App's broker; ``app.operations``."""

    def __init__(self, app: App) -> None:
        self._app = app

    # -- queues ----------------------------------------------------------------------------
    async def queue_stats(self, queues: Sequence[str] | None = None) -> dict[str, QueueStats]:
        """Depth of each queue: the given ones, else the App's and every one the broker knows."""
        backend = self._app.backend
        if queues is None:
            known = await backend.queue_stats(None)
            missing = [q for q in self._app.queues if q not in {s.queue for s in known}]
            stats = known + (await backend.queue_stats(missing) if missing else [])
        else:
            stats = await backend.queue_stats(queues)
        return {s.queue: s for s in sorted(stats, key=lambda s: s.queue)}

    async def known_queues(self) -> list[str]:
        """The App's queues and every queue the broker knows of, sorted."""
        known = {s.queue for s in await self._app.backend.queue_stats(None)}
        return sorted(known | set(self._app.queues))

    async def purge_queue(self, queue: str, *, on_progress: Progress | None = None) -> int:
        """Cancel every job waiting in ``queue``; how many (see ``App.purge_queue``)."""
        _check_queue(queue)
        purged = 0
        while True:
            batch = await self._app.backend.purge_queue(queue, limit=_PURGE_BATCH)
            purged += batch
            if batch and on_progress is not None:
                on_progress(purged)
            if batch < _PURGE_BATCH:
                return purged

    async def remove_queue(self, queue: str) -> None:
        """Remove an unused queue (see ``App.remove_queue``)."""
        _check_queue(queue)
        (stats,) = await self._app.backend.queue_stats([queue])
        held = {"pending": stats.pending, "scheduled": stats.scheduled}
        held |= {"running": stats.running, "dead": stats.dead}
        busy = ", ".join(f"{n} {what}" for what, n in held.items() if n)
        if busy:
            raise ValueError(f"queue {queue!r} is not empty ({busy}); nothing was removed")
        if self._app.backend.store.available:
            serving = [w.id for w in await self.workers() if queue in w.queues]
            if serving:
                raise ValueError(
                    f"queue {queue!r} is served by {len(serving)} live worker(s) "
                    f"({', '.join(serving)}); nothing was removed"
                )
        await self._app.backend.remove_queue(queue)

    # -- workers ---------------------------------------------------------------------------
    async def workers(self, *, include_gone: bool = False) -> list[WorkerInfo]:
        """The live workers (with ``include_gone``, also those gone lately)."""
        return await self._app.backend.store.workers(include_gone=include_gone)

    # -- dead letters ----------------------------------------------------------------------
    async def dead_letter_queues(self, queue: str | None = None) -> list[str]:
        """``[queue]``, or (None) every queue that has dead letters."""
        if queue is not None:
            return [queue]
        return [name for name, s in (await self.queue_stats()).items() if s.dead]

    async def dead_letters(
        self, queue: str | None, match: DeadLetterFilter | None = None, limit: int = 100
    ) -> list[DeadLetter]:
        """The oldest ``limit`` dead letters that ``match``, of ``queue`` or (None) of every
        queue in turn."""
        match = match or DeadLetterFilter()
        found: list[DeadLetter] = []
        for name in await self.dead_letter_queues(queue):
            after: str | None = None
            while len(found) < limit:
                page = await self._app.backend.dead_letters(name, limit=_DLQ_PAGE, after=after)
                found.extend(d for d in page if match(d))
                if len(page) < _DLQ_PAGE:
                    break
                after = page[-1].cursor
            if len(found) >= limit:
                break
        return found[:limit]

    async def count_dead(
        self, queue: str | None, match: DeadLetterFilter | None = None
    ) -> tuple[list[str], int]:
        """The queues looked at and how many of their dead letters ``match``."""
        queues = await self.dead_letter_queues(queue)
        if match is None or (match.by_id_only and match.ids is None):
            stats = await self.queue_stats(queues) if queues else {}
            return queues, sum(s.dead for s in stats.values())
        found = await self.dead_letters(queue, match, limit=2**62)
        return queues, len(found)

    async def replay_dead(
        self,
        queue: str | None,
        match: DeadLetterFilter | None = None,
        *,
        on_progress: Progress | None = None,
    ) -> int:
        """Send the matching dead letters back to their queue as attempt 1, then remove them
        (see ``App.replay_dead``); how many were replayed."""
        backend = self._app.backend

        async def replay(chosen: list[DeadLetter]) -> set[str]:
            job_ids = await backend.enqueue([self._replay_envelope(d) for d in chosen])
            # A job whose idempotency key a live job holds now was not enqueued again
            # (its id came back as the live job's): it stays in the dead-letter queue.
            return {d.id for d, job_id in zip(chosen, job_ids, strict=True) if job_id == d.id}

        total = 0
        for name in await self.dead_letter_queues(queue):
            progress = _offset(on_progress, total)
            total += await self._each_dead_page(name, match or DeadLetterFilter(), replay, progress)
        return total

    async def purge_dead(
        self,
        queue: str | None,
        match: DeadLetterFilter | None = None,
        *,
        on_progress: Progress | None = None,
    ) -> int:
        """Delete the matching dead letters; how many were deleted."""
        match = match or DeadLetterFilter()

        async def remove_all(chosen: list[DeadLetter]) -> set[str]:
            return {d.id for d in chosen}

        total = 0
        for name in await self.dead_letter_queues(queue):
            if match.by_id_only:  # no need to read them first
                ids = sorted(match.ids) if match.ids is not None else None
                total += await self._app.backend.purge_dead(name, ids)
            else:
                progress = _offset(on_progress, total)
                total += await self._each_dead_page(name, match, remove_all, progress)
        return total

    async def _each_dead_page(
        self,
        queue: str,
        match: DeadLetterFilter,
        act: Callable[[list[DeadLetter]], Coroutine[Any, Any, set[str]]],
        on_progress: Progress | None,
    ) -> int:
        """Page through ``queue``'s dead letters; ``act`` on the matching ones of each page
        says which to remove, and those are purged. Returns how many were removed."""
        backend = self._app.backend
        removed = 0
        after: str | None = None
        while True:
            page = await backend.dead_letters(queue, limit=_DLQ_PAGE, after=after)
            chosen = [d for d in page if match(d)]
            gone: set[str] = set()
            if chosen:
                gone = await act(chosen)
                if gone:
                    removed += await backend.purge_dead(queue, list(gone))
                if on_progress is not None:
                    on_progress(removed)
            if len(page) < _DLQ_PAGE:
                return removed
            # Page on from the last entry that is still there: removed ones are gone.
            kept = [d for d in page if d.id not in gone]
            if kept:
                after = kept[-1].cursor

    def _replay_envelope(self, dead: DeadLetter) -> Envelope:
        serializer = self._app.serializer
        try:
            msg = Message.decode(dead.body, serializer)
        except DecodeError:
            return Envelope(dead.id, dead.queue, dead.body, dead.task, replay=True)
        fresh = replace(msg, attempt=1, eta=None)  # a fresh retry budget, runnable now
        body = fresh.encode(serializer)
        return Envelope(
            msg.id, msg.queue, body, msg.task, None, msg.key, replay=True, priority=msg.priority
        )


def _offset(on_progress: Progress | None, earlier: int) -> Progress | None:
    """``on_progress`` of a whole operation, for one queue's part that starts at ``earlier``."""
    if on_progress is None:
        return None
    report = on_progress
    return lambda done: report(earlier + done)
