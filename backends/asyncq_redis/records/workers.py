"""Worker heartbeats in Redis: one hash of every worker's last heartbeat and a sorted set of
when each one is forgotten (its heartbeat's deadline plus the time a gone worker stays
listed), both under one hash tag. Listing reads those two keys, never the key space: a
SCAN for per-worker keys read every job record of the database on the way, seconds on a
Redis holding a day of results."""

from __future__ import annotations

__all__ = ["BEAT", "GONE", "LIST", "SCRIPTS"]

BEAT = """
-- KEYS: the hash, the set. ARGV: id, heartbeat JSON, ms until it is forgotten. Times are
-- the server's, so the hosts' clocks do not matter.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[1])
"""

GONE = """
-- KEYS: the hash, the set. ARGV: id.
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
"""

LIST = """
-- KEYS: the hash, the set.
-- Forgets the workers past their time; the others as {id, forget at, heartbeat JSON}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local old = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)
for i = 1, #old, 500 do
    local chunk = {unpack(old, i, math.min(i + 499, #old))}
    redis.call('HDEL', KEYS[1], unpack(chunk))
    redis.call('ZREM', KEYS[2], unpack(chunk))
end
local out = {}
local listed = redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')
for i = 1, #listed, 2 do
    local beat = redis.call('HGET', KEYS[1], listed[i])
    if beat then
        table.insert(out, {listed[i], listed[i + 1], beat})
    end
end
return {now, out}
"""

SCRIPTS = {"WORKER_BEAT": BEAT, "WORKER_GONE": GONE, "WORKER_LIST": LIST}
