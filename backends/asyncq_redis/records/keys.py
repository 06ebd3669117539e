"""Where a queue's state lives in Redis: every key of one queue under one hash tag."""

from __future__ import annotations

__all__ = ["QueueKeys"]


class QueueKeys:
    """The keys of one queue, all under one hash tag (``<prefix>:{<queue>}``) so the queue
    lives in one cluster slot. The scripts build the per-job keys from ``base`` themselves:
    ``<base>:job:<id>`` (the record), ``<base>:key:<key>`` (an idempotency key) and
    ``<base>:done:<id>`` (where the job's end is announced).

    ``stream``, ``levels``, ``dead`` and ``wake`` are the Redis backend's (its work stream,
    which holds priority 0, the set of the priorities above 0 that have a stream of their
    own, ``<stream>:<priority>``, its dead-letter stream, the delayed-job mover's wake-ups);
    ``running`` is a record store's set of the
    jobs a broker holds unacknowledged; both kinds keep ``scheduled``, the delayed jobs and
    retries (a sorted set by due time on the Redis backend, a set in a record store), and
    ``deferred``, the set of those of them waiting on a rate or concurrency limit (queued,
    and counted as pending).
    """

    __slots__ = (
        "base",
        "dead",
        "deferred",
        "done_prefix",
        "levels",
        "queue",
        "running",
        "scheduled",
        "stream",
        "wake",
    )

    def __init__(self, prefix: str, queue: str) -> None:
        self.queue = queue
        self.base = f"{prefix}:{{{queue}}}"
        self.stream = f"{self.base}:stream"
        self.levels = f"{self.base}:levels"
        self.scheduled = f"{self.base}:scheduled"
        self.dead = f"{self.base}:dead"
        self.deferred = f"{self.base}:deferred"
        self.wake = f"{self.base}:wake"
        self.running = f"{self.base}:running"
        self.done_prefix = f"{self.base}:done:"

    def job(self, job_id: str) -> str:
        return f"{self.base}:job:{job_id}"

    def minute(self, start: int) -> str:
        """The finished-attempt counts of the minute starting at ``start`` (epoch seconds)."""
        return f"{self.base}:minute:{start}"

    def stream_at(self, priority: int) -> str:
        """The stream of the queue's jobs of ``priority``: ``stream`` itself for 0."""
        return self.stream if priority == 0 else f"{self.stream}:{priority}"
