"""Rate and concurrency permits in Redis. Each limit key has its own hash tag, so whichever
queues its jobs are in, all of a key's state is one Cluster slot:

* a rate: ``<prefix>:limit:{<key>}``, a sorted set of the starts of the last ``per``
  seconds scored by the server's clock in microseconds, and ``<prefix>:limit:{<key>}:wait``,
  when each refused caller was told to come back (so the n-th waits for the n-th permit);
* a concurrency limit: ``<prefix>:conc:{<key>}``, its holders scored by when their lease
  runs out, ``…:wait`` as above, ``…:hold``, a moving average of how long permits were
  held (how long a refused caller waits before asking again), and for a limit of 1 whose
  jobs start in enqueue order, ``…:line`` (the tickets given out, the head of the line)
  and ``…:void`` (tickets whose enqueue stored nothing).

One script per request, all pipelined in one round trip; each script is atomic, so however
many workers ask at once, no window holds more than ``limit`` starts and no key more than
``limit`` holders. Every key expires once quiet for its window or lease."""

from __future__ import annotations

from collections.abc import Sequence

from asyncq.records import ConcurrencyRequest, Permit, RateRequest
from asyncq.store import ORDER_SKIP_AFTER

from .client import RedisStore
from .scripting import Call

__all__ = [
    "STORE_SCRIPTS",
    "release_concurrency_permits",
    "renew_concurrency_permits",
    "take_concurrency_permits",
    "take_order_tickets",
    "take_rate_permits",
    "void_order_tickets",
]

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
-- The refused callers still waiting, and a place among them for one more, told to come
-- back `wait` us from now; the set outlives the last of them by `keep` us.
local function queue_up(waiting, wait, token, keep)
    redis.call('ZADD', waiting, now + wait, token)
    redis.call('PEXPIRE', waiting, math.ceil((wait + keep) / 1000) + 1000)
end
"""

TAKE_RATE = (
    _NOW
    + """
-- KEYS: the limit's log, its waiting callers. ARGV: limit, per (us), token (the job's
-- start: the same when it comes back after a refusal).
-- Returns 0 when a permit was taken, else the microseconds to wait for one.
local log, waiting = KEYS[1], KEYS[2]
local limit, per, token = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
-- A waiter that has not come back this long after its time never will (cancelled, lost).
local grace = math.max(1000000, math.min(per, 10000000))
redis.call('ZREMRANGEBYSCORE', log, '-inf', now - per)
redis.call('ZREMRANGEBYSCORE', waiting, '-inf', now - grace)
local taken = redis.call('ZCARD', log)
local ahead = redis.call('ZCARD', waiting)
local returning = redis.call('ZSCORE', waiting, token)
-- A free permit goes to a waiter coming back, or to a newcomer if it leaves enough for
-- every waiter still to come: newcomers do not jump the line.
if (returning and taken < limit) or taken + ahead < limit then
    if returning then
        redis.call('ZREM', waiting, token)
    end
    redis.call('ZADD', log, now, token .. '@' .. now)
    -- Quiet for a window, the log is empty anyway: let it go.
    redis.call('PEXPIRE', log, math.ceil(per / 1000))
    return 0
end
local at
if returning then
    -- Back on time, but the window's permits come free later than foretold (starts run a
    -- little behind their permits): it keeps its place, next when the oldest start leaves.
    at = tonumber(redis.call('ZRANGE', log, taken - limit, taken - limit, 'WITHSCORES')[2])
else
    -- Behind everyone waiting: the starts of the window and the waiters' times together
    -- make a log that runs ahead; its limit-th newest entry leaves `per` after it.
    local i = taken + ahead - limit
    if i < taken then
        at = tonumber(redis.call('ZRANGE', log, i, i, 'WITHSCORES')[2])
    else
        at = tonumber(redis.call('ZRANGE', waiting, i - taken, i - taken, 'WITHSCORES')[2])
    end
end
local wait = math.max(at + per - now, 1)
queue_up(waiting, wait, token, grace)
return wait
"""
)

TAKE_CONCURRENCY = (
    _NOW
    + """
-- KEYS: the limit's holders, its waiting callers, its hold average, its line, the line's
-- voided tickets. ARGV: limit, lease (us), holder, ticket ('' for none), skip after (us).
-- Returns 0 when the holder holds a permit (taken, or renewed), else the microseconds to
-- wait before asking again.
local holders, waiting, hold, line, voided = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local limit, lease, holder = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local ticket, skip_after = tonumber(ARGV[4]), tonumber(ARGV[5])
redis.call('ZREMRANGEBYSCORE', holders, '-inf', now)  -- lost workers' permits come back
redis.call('ZREMRANGEBYSCORE', waiting, '-inf', now - 2000000)  -- waiters gone for good
local typical = tonumber(redis.call('GET', hold) or '100000')
local head, ahead = nil, 0
if ticket then
    -- The line of a key whose jobs start in enqueue order: `head` is the ticket whose turn
    -- it is, `seen` when the line last moved or its head last asked.
    local state = redis.call('HMGET', line, 'head', 'seen')
    head = tonumber(state[1] or '1')
    local seen = tonumber(state[2] or now)
    while redis.call('SREM', voided, head) == 1 do  -- enqueues that stored nothing
        head, seen = head + 1, now
    end
    if ticket == head then
        seen = now
    elseif ticket > head and now - seen > skip_after then
        head, seen = ticket, now  -- the ones ahead never came (cancelled, lost): move on
    end
    redis.call('HSET', line, 'head', head, 'seen', seen)
    redis.call('PEXPIRE', line, 604800000)
    ahead = math.max(ticket - head, 0)  -- a ticket behind the head is a retry's
end
if ahead == 0 and (redis.call('ZSCORE', holders, holder) or
        redis.call('ZCARD', holders) < limit) then
    redis.call('ZADD', holders, now + lease, holder)
    redis.call('PEXPIRE', holders, math.ceil(lease / 1000) + 1000)
    redis.call('ZREM', waiting, holder)
    if ticket and ticket >= head then
        redis.call('HSET', line, 'head', ticket + 1, 'seen', now)
    end
    return 0
end
if ahead > 0 then  -- not its turn: one typical hold per job ahead of it
    return math.min(math.max(typical * ahead, 10000), 30000000)
end
-- A waiter refused again keeps its place in the line; a newcomer goes to its end.
local place = redis.call('ZRANK', waiting, holder) or redis.call('ZCARD', waiting)
local wait = math.min(math.max(typical * (1 + math.floor(place / limit)), 10000), 30000000)
queue_up(waiting, wait, holder, 2000000)
return wait
"""
)

TAKE_TICKETS = """
-- KEYS: a key's line. ARGV: how many tickets. Returns the last one given out.
local last = redis.call('HINCRBY', KEYS[1], 'issued', tonumber(ARGV[1]))
redis.call('PEXPIRE', KEYS[1], 604800000)
return last
"""

VOID_TICKETS = """
-- KEYS: a key's line, its voided tickets. ARGV: tickets.
local head = tonumber(redis.call('HGET', KEYS[1], 'head') or '1')
for i = 1, #ARGV do
    if tonumber(ARGV[i]) >= head then
        redis.call('SADD', KEYS[2], ARGV[i])
    end
end
redis.call('PEXPIRE', KEYS[2], 604800000)
return 1
"""

RENEW_CONCURRENCY = (
    _NOW
    + """
-- KEYS: the limit's holders. ARGV: lease (us), holder.
if redis.call('ZADD', KEYS[1], 'XX', 'CH', now + tonumber(ARGV[1]), ARGV[2]) == 1 then
    redis.call('PEXPIRE', KEYS[1], math.ceil(tonumber(ARGV[1]) / 1000) + 1000)
end
return 1
"""
)

RELEASE_CONCURRENCY = """
-- KEYS: the limit's holders, its hold average. ARGV: holder, how long it held (us).
redis.call('ZREM', KEYS[1], ARGV[1])
local held = tonumber(ARGV[2])
local typical = redis.call('GET', KEYS[2])
if typical then
    held = math.floor(0.8 * tonumber(typical) + 0.2 * held)
end
redis.call('SET', KEYS[2], held, 'PX', 86400000)
return 1
"""


STORE_SCRIPTS = {
    "TAKE_RATE": TAKE_RATE,
    "TAKE_CONCURRENCY": TAKE_CONCURRENCY,
    "TAKE_TICKETS": TAKE_TICKETS,
    "VOID_TICKETS": VOID_TICKETS,
    "RENEW_CONCURRENCY": RENEW_CONCURRENCY,
    "RELEASE_CONCURRENCY": RELEASE_CONCURRENCY,
}
"""The scripts the record layer's JobStore runs by name: every RedisStore that serves one
(the Redis backend's, an AMQP record store's) registers them."""


def _us(seconds: float) -> int:
    return max(int(seconds * 1e6), 1)


async def take_rate_permits(
    redis: RedisStore, prefix: str, requests: Sequence[RateRequest]
) -> list[float]:
    """See :meth:`asyncq.store.JobStore.take_rate_permits`."""
    if not requests:
        return []
    calls: list[Call] = []
    for r in requests:
        log = f"{prefix}:limit:{{{r.key}}}"
        calls.append(("TAKE_RATE", [log, f"{log}:wait"], [r.limit, _us(r.per), r.token]))
    with redis.errors("taking rate-limit permits"):
        replies = await redis.run(calls)
    return [int(wait) / 1e6 for wait in replies]


def _concurrency_key(prefix: str, key: str) -> str:
    return f"{prefix}:conc:{{{key}}}"


async def take_concurrency_permits(
    redis: RedisStore, prefix: str, requests: Sequence[ConcurrencyRequest]
) -> list[float]:
    """See :meth:`asyncq.store.JobStore.take_concurrency_permits`."""
    if not requests:
        return []
    calls: list[Call] = []
    skip_after = _us(ORDER_SKIP_AFTER)
    for r in requests:
        holders = _concurrency_key(prefix, r.key)
        keys = [holders, f"{holders}:wait", f"{holders}:hold", f"{holders}:line", f"{holders}:void"]
        ticket = "" if r.ticket is None else r.ticket
        args = [r.limit, _us(r.lease), r.holder, ticket, skip_after]
        calls.append(("TAKE_CONCURRENCY", keys, args))
    with redis.errors("taking concurrency permits"):
        replies = await redis.run(calls)
    return [int(wait) / 1e6 for wait in replies]


async def take_order_tickets(redis: RedisStore, prefix: str, keys: Sequence[str]) -> list[int]:
    """See :meth:`asyncq.store.JobStore.take_order_tickets`: one call per distinct key."""
    if not keys:
        return []
    counts: dict[str, int] = {}
    for key in keys:
        counts[key] = counts.get(key, 0) + 1
    calls: list[Call] = [
        ("TAKE_TICKETS", [f"{_concurrency_key(prefix, key)}:line"], [count])
        for key, count in counts.items()
    ]
    with redis.errors("taking order tickets"):
        replies = await redis.run(calls)
    # Each key's tickets, first to last, handed out in the order the keys were given.
    following = {
        key: int(last) - count + 1
        for (key, count), last in zip(counts.items(), replies, strict=True)
    }
    out = []
    for key in keys:
        out.append(following[key])
        following[key] += 1
    return out


async def void_order_tickets(
    redis: RedisStore, prefix: str, tickets: Sequence[tuple[str, int]]
) -> None:
    if not tickets:
        return
    calls: list[Call] = []
    for key, ticket in tickets:
        line = f"{_concurrency_key(prefix, key)}:line"
        calls.append(("VOID_TICKETS", [line, f"{_concurrency_key(prefix, key)}:void"], [ticket]))
    with redis.errors("voiding order tickets"):
        await redis.run(calls)


async def renew_concurrency_permits(
    redis: RedisStore, prefix: str, permits: Sequence[Permit], lease: float
) -> None:
    if not permits:
        return
    calls: list[Call] = [
        ("RENEW_CONCURRENCY", [_concurrency_key(prefix, p.key)], [_us(lease), p.holder])
        for p in permits
    ]
    with redis.errors("renewing concurrency permits"):
        await redis.run(calls)


async def release_concurrency_permits(
    redis: RedisStore, prefix: str, permits: Sequence[Permit], held_for: Sequence[float]
) -> None:
    if not permits:
        return
    calls: list[Call] = []
    for p, held in zip(permits, held_for, strict=True):
        holders = _concurrency_key(prefix, p.key)
        calls.append(("RELEASE_CONCURRENCY", [holders, f"{holders}:hold"], [p.holder, _us(held)]))
    with redis.errors("releasing concurrency permits"):
        await redis.run(calls)
