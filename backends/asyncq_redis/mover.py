"""The delayed-job mover: due delayed jobs and retries move from each queue's scheduled set
into the stream of their priority. It is woken by the enqueue of a job due sooner than any
other (pub/sub on the queue's wake channel), and otherwise sleeps until the next is due; a
worker runs it for its queues (``Backend.maintain``), and however many run at once, each
job moves once.

The wake channel also carries ``levels`` when a queue's first job of a priority made that
priority's stream: the mover passes it on to the worker's fetch (``on_levels``), whose
blocking read covers only the streams it knew of.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import anyio
from redis import exceptions as rx

from asyncq.errors import BrokerError

from .records import QueueKeys, RedisStore, define
from .scripts import QUEUE

__all__ = ["PROMOTE", "move_due_jobs"]

log = logging.getLogger("asyncq.redis")

_BATCH = 1000  # jobs one PROMOTE call moves at the most

PROMOTE = (
    define(QUEUE)
    + """
-- KEYS: scheduled, stream, deferred. ARGV: base, now, limit.
-- Move due jobs from the scheduled set into the stream. ZREM decides who moves a job, so
-- however many workers run this at once, each job is moved exactly once.
-- Returns {moved, score of the next job still waiting or ''}.
local scheduled, stream = KEYS[1], KEYS[2]
local base, now, limit = ARGV[1], ARGV[2], ARGV[3]
local due = redis.call('ZRANGEBYSCORE', scheduled, '-inf', now, 'LIMIT', 0, limit)
local moved = 0
for _, id in ipairs(due) do
    if redis.call('ZREM', scheduled, id) == 1 then
        redis.call('SREM', KEYS[3], id)  -- if it waited on a limit, it waits no more
        local jk = base .. ':job:' .. id
        local job = redis.call('HMGET', jk, 'body', 'priority')
        if job[1] then
            -- Into the stream of its priority, which its enqueue made (see scripts.py).
            queue(job[2] and stream .. ':' .. job[2] or stream, jk, id, job[1], now)
            moved = moved + 1
        end
    end
end
local next = redis.call('ZRANGE', scheduled, 0, 0, 'WITHSCORES')
return {moved, next[2] or ''}
"""
)


LEVELS_NEWS = b"levels"
"""What the wake channel carries when a queue got a stream for a new priority."""


async def move_due_jobs(
    redis: RedisStore, keys: list[QueueKeys], on_levels: Callable[[str], None]
) -> None:
    """Move due jobs of the queues of ``keys`` into their streams, until cancelled; call
    ``on_levels(queue)`` when a queue gets a stream for a new priority."""
    while True:
        try:
            await _move_forever(redis, keys, on_levels)
        except (rx.RedisError, OSError, BrokerError) as exc:
            # Keep the worker running through an outage; its fetch loop reports it too.
            log.warning("moving delayed jobs paused, retrying in 1 s: %s", exc)
            await anyio.sleep(1.0)


async def _move_forever(
    redis: RedisStore, keys: list[QueueKeys], on_levels: Callable[[str], None]
) -> None:
    pubsub = redis.listener.pubsub(ignore_subscribe_messages=True)
    queue_of = {k.wake.encode(): k.queue for k in keys}

    def heard(message: dict[str, object] | None) -> bool:
        if message is None:
            return False
        if message.get("data") == LEVELS_NEWS:
            channel = message.get("channel")
            if isinstance(channel, bytes) and channel in queue_of:
                on_levels(queue_of[channel])
        return True

    try:
        await pubsub.subscribe(*[k.wake for k in keys])
        while True:
            now = repr(time.time())
            calls = [
                ("PROMOTE", [k.scheduled, k.stream, k.deferred], [k.base, now, _BATCH])
                for k in keys
            ]
            replies = await redis.run(calls)
            if any(moved >= _BATCH for moved, _ in replies):
                continue  # more are due than one step moves
            dues = [float(nxt) for _, nxt in replies if nxt]
            # With nothing scheduled, the wait is only a safety net for a wake-up
            # message lost to a reconnect.
            wait = min(dues, default=time.time() + 30.0) - time.time()
            if wait > 0 and heard(await pubsub.get_message(timeout=min(wait, 30.0))):
                # A burst of retries sends a burst of wake-ups: one move serves them all.
                while heard(await pubsub.get_message(timeout=0)):
                    pass
    finally:
        with anyio.CancelScope(shield=True):
            await pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]  # typed from redis 8
