"""The Lua scripts of the operations on a whole queue of the Redis backend: its depths
(``STATS``) and cancelling what waits in it (``PURGE``). The fragments they share with the
job scripts come from :mod:`asyncq_redis.scripts`."""

from __future__ import annotations

from .records import FINISH, define
from .scripts import ENTRY_FIELDS, LEVELS, UNDELIVERED

__all__ = ["PURGE", "RUN_NOW", "STATS"]

STATS = (
    define(LEVELS, UNDELIVERED)
    + """
-- KEYS: stream, scheduled, dead, levels, deferred. ARGV: group.
-- Returns {entries in the streams of every priority, of them delivered and not
-- acknowledged, scheduled, dead, the age in ms of the oldest entry no worker has been
-- handed (0 when there is none), of the scheduled those waiting on a limit}. An entry id
-- is the server's clock in ms when the entry was added (enqueued, due, retried), and so is
-- TIME: no clock of a client's comes in.
local length, running, oldest = 0, 0, nil
for _, l in ipairs(levels_of(KEYS[1], KEYS[4])) do
    length = length + redis.call('XLEN', l[2])
    local ok, pending = pcall(redis.call, 'XPENDING', l[2], ARGV[1])
    if ok then
        running = running + pending[1]
    end
    local first = redis.call('XRANGE', l[2], undelivered(l[2], ARGV[1]), '+', 'COUNT', 1)[1]
    if first then
        local ms = tonumber(string.match(first[1], '^(%d+)'))
        if oldest == nil or ms < oldest then oldest = ms end
    end
end
local age = 0
if oldest then
    local now = redis.call('TIME')
    age = math.max(tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) - oldest, 0)
end
return {length, running, redis.call('ZCARD', KEYS[2]), redis.call('XLEN', KEYS[3]), age,
    redis.call('SCARD', KEYS[5])}
"""
)

PURGE = (
    define(FINISH, UNDELIVERED, ENTRY_FIELDS, LEVELS)
    + """
-- KEYS: stream, scheduled, levels, deferred. ARGV: base, group, now, ttl_ms, limit.
-- Cancel up to limit waiting jobs of the queue: stream entries no worker has been handed
-- (of every priority, the highest first) and jobs in the scheduled set (delayed, or
-- waiting for a retry). Returns how many were cancelled.
local stream, scheduled, levels = KEYS[1], KEYS[2], KEYS[3]
local base, group, now, ttl, limit = ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
local purged = 0
for _, l in ipairs(levels_of(stream, levels)) do
    local s = l[2]
    if purged < limit and redis.call('EXISTS', s) == 1 then
        for _, e in ipairs(redis.call('XRANGE', s, undelivered(s, group), '+', 'COUNT',
                limit - purged)) do
            local entry, id = e[1], entry_fields(e[2])
            redis.call('XDEL', s, entry)
            if id then
                finish(base, base .. ':job:' .. id, id, 'cancelled', ttl, now)
            end
            purged = purged + 1
        end
    end
end
if purged < limit then
    for _, id in ipairs(redis.call('ZRANGE', scheduled, 0, limit - purged - 1)) do
        redis.call('ZREM', scheduled, id)
        redis.call('SREM', KEYS[4], id)
        finish(base, base .. ':job:' .. id, id, 'cancelled', ttl, now)
        purged = purged + 1
    end
end
return purged
"""
)

RUN_NOW = """
-- KEYS: scheduled. ARGV: base, id.
-- A job waiting for its time (delayed, snoozed, retrying, or on a limit) due now; the mover
-- hears of it on the wake channel and moves it into its stream. 1 if it was waiting.
if not redis.call('ZSCORE', KEYS[1], ARGV[2]) then
    return 0
end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZADD', KEYS[1], now, ARGV[2])
redis.call('PUBLISH', ARGV[1] .. ':wake', now)
return 1
"""
