"""Rate-limit permits in Redis: one sorted set per limit key, ``<prefix>:limit:{<key>}``
(its own hash tag, so a key is one Cluster slot whichever queues its jobs are in), whose
members are the starts of the last ``per`` seconds, scored by the server's clock in
microseconds. One script per request, all pipelined in one round trip; each script is
atomic, so however many workers ask at once, no window holds more than ``limit``."""

from __future__ import annotations

from collections.abc import Sequence

from asyncq.records import RateRequest

from .client import RedisStore
from .scripting import Call

__all__ = ["STORE_SCRIPTS", "TAKE_RATE", "take_rate_permits"]

TAKE_RATE = """
-- KEYS: the limit's log. ARGV: limit, per (us), token.
-- Returns 0 when a permit was taken, else the microseconds until the oldest start of the
-- window leaves it.
local log, limit, per = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
redis.call('ZREMRANGEBYSCORE', log, '-inf', now - per)
local taken = redis.call('ZCARD', log)
if taken < limit then
    redis.call('ZADD', log, now, ARGV[3])
    -- Quiet for a window, the log is empty anyway: let it go.
    redis.call('PEXPIRE', log, math.ceil(per / 1000))
    return 0
end
local oldest = redis.call('ZRANGE', log, taken - limit, taken - limit, 'WITHSCORES')
return math.max(tonumber(oldest[2]) + per - now, 1)
"""


STORE_SCRIPTS = {"TAKE_RATE": TAKE_RATE}
"""The scripts the record layer's JobStore runs by name: every RedisStore that serves one
(the Redis backend's, an AMQP record store's) registers them."""


async def take_rate_permits(
    redis: RedisStore, prefix: str, requests: Sequence[RateRequest]
) -> list[float]:
    """See :meth:`asyncq.store.JobStore.take_rate_permits`."""
    if not requests:
        return []
    calls: list[Call] = [
        ("TAKE_RATE", [f"{prefix}:limit:{{{r.key}}}"], [r.limit, max(int(r.per * 1e6), 1), r.token])
        for r in requests
    ]
    with redis.errors("taking rate-limit permits"):
        replies = await redis.run(calls)
    return [int(wait) / 1e6 for wait in replies]
