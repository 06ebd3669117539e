"""The Lua scripts behind every state change of a job on the Redis backend's streams.

Each script works on one queue's keys (:class:`~asyncq_redis.records.QueueKeys`), which
share a hash tag and so one Redis Cluster slot; job records and idempotency keys are built
inside the scripts from ``base``, and their fragments (finish, claim, cancel) come from the
record layer (:mod:`asyncq_redis.records.lua`).

On this backend a record also keeps ``entry`` (its stream entry while queued) and ``body``
(only while it waits in the scheduled set). Its ``status`` is queued, scheduled, failed or
how it ended: a queued job whose stream entry is delivered and unacknowledged is running
(see ``DELIVERED``), which is what reading a record and cancelling one look at.
"""

from __future__ import annotations

from typing import Any

from asyncq.settlement import Outcome, Settlement

from .records import CLAIM, FINISH, IS_FINISHED, Fragment, define, settle_values

__all__ = [
    "DELIVERED",
    "ENQUEUE",
    "ENTRY_FIELDS",
    "PURGE",
    "QUEUE",
    "RENEW",
    "SETTLE",
    "STATS",
    "TAKE",
    "UNDELIVERED",
    "settle_args",
]

# Put a job into its stream, ready for a worker.
QUEUE = Fragment("""
local function queue(stream, jk, id, body, now)
    local entry = redis.call('XADD', stream, '*', 'id', id, 'body', body)
    redis.call('HSET', jk, 'status', 'queued', 'entry', entry, 'updated', now)
    redis.call('HDEL', jk, 'body', 'eta')
end
""")

DELIVERED = Fragment("""
-- Whether stream entry `entry` is delivered and not yet acknowledged (to `consumer`, when
-- one is named): a worker holds its job. False too when the group is gone.
local function delivered(stream, group, entry, consumer)
    local ok, found
    if consumer then
        ok, found = pcall(redis.call, 'XPENDING', stream, group, entry, entry, 1, consumer)
    else
        ok, found = pcall(redis.call, 'XPENDING', stream, group, entry, entry, 1)
    end
    return ok and #found == 1
end
""")

UNDELIVERED = Fragment("""
-- Where the entries no worker has been handed begin, as an XRANGE start: after the group's
-- last-delivered id (every earlier entry still in the stream is pending, so running), or
-- the stream's start while the group does not exist yet.
local function undelivered(stream, group)
    local ok, groups = pcall(redis.call, 'XINFO', 'GROUPS', stream)
    if ok then
        for _, g in ipairs(groups) do
            local fields = {}
            for i = 1, #g, 2 do fields[g[i]] = g[i + 1] end
            if fields['name'] == group then
                return '(' .. fields['last-delivered-id']
            end
        end
    end
    return '-'
end
""")

ENTRY_FIELDS = Fragment("""
-- A stream entry's job id and body (nil where the entry has none: not ours).
local function entry_fields(fields)
    local id, body
    for i = 1, #fields, 2 do
        if fields[i] == 'id' then id = fields[i + 1] elseif fields[i] == 'body' then
            body = fields[i + 1] end
    end
    return id, body
end
""")

ENQUEUE = (
    define(CLAIM)
    + """
-- KEYS: stream, scheduled. ARGV: base, now, then per job: id, body, task, eta ('' = now),
-- key ('' = none). Returns each job's id: a key already held returns its holder's id.
local stream, scheduled = KEYS[1], KEYS[2]
local base, now = ARGV[1], ARGV[2]
local ids = {}
local wake = false
for i = 3, #ARGV, 5 do
    local id, body, task, eta, key = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
    local jk = base .. ':job:' .. id
    local claimed, got = claim(base, jk, id, key, true)
    if claimed == 'new' then
        if eta ~= '' and tonumber(eta) > tonumber(now) then
            redis.call('HSET', jk, 'status', 'scheduled', 'task', task, 'attempt', 1, 'eta', eta,
                'body', body, 'updated', now)
            redis.call('ZADD', scheduled, eta, id)
            wake = true
        else
            local entry = redis.call('XADD', stream, '*', 'id', id, 'body', body)
            redis.call('HSET', jk, 'status', 'queued', 'task', task, 'attempt', 1,
                'entry', entry, 'updated', now)
        end
    end
    table.insert(ids, got)
end
if wake then
    redis.call('PUBLISH', base .. ':wake', now)
end
return ids
"""
)

# Admit entries taken over from a lost worker: each runs again unless it must not. One that
# ended meanwhile (a copy of it finished elsewhere) is acknowledged and skipped; one whose
# cancellation was asked for while its worker was gone ends cancelled.
#
# Fresh entries need no such look: an entry is added only together with its job's record
# set to queued, and a cancellation before delivery deletes it. A job is running exactly
# while its entry is delivered and unacknowledged, which is what reading a record looks at.
_ADMIT = Fragment(
    """
local function admit(stream, group, base, entries, redelivered, now, ttl, out)
    for _, e in ipairs(entries) do
        local entry = e[1]
        local id, body = entry_fields(e[2])
        if not id or not body then
            -- Not ours (written by hand?): hand it over so the worker dead-letters it.
            table.insert(out, {entry, id or entry, body or '', redelivered})
        else
            local jk = base .. ':job:' .. id
            local state = redis.call('HMGET', jk, 'status', 'cancel')
            if finished(state[1]) then
                redis.call('XACK', stream, group, entry)
                redis.call('XDEL', stream, entry)
            elseif state[2] then
                redis.call('XACK', stream, group, entry)
                redis.call('XDEL', stream, entry)
                finish(base, jk, id, 'cancelled', ttl, now)
            else
                table.insert(out, {entry, id, body, redelivered})
            end
        end
    end
end

local function fresh(entries, out)
    for _, e in ipairs(entries) do
        local entry = e[1]
        local id, body = entry_fields(e[2])
        table.insert(out, {entry, id or entry, body or '', 0})
    end
end
""",
    (FINISH, IS_FINISHED, ENTRY_FIELDS),
)

TAKE = (
    define(_ADMIT)
    + """
-- KEYS: stream. ARGV: group, consumer, count, base, now, ttl_ms, reclaim_idle_ms ('' = skip),
-- cursor (where the last look for abandoned entries stopped; '0-0' = the start).
-- Reclaims entries whose worker stopped renewing them (idle past the visibility timeout),
-- then reads new ones, up to count in all. Returns {cursor, pending, rows}: where this look
-- stopped and whether the group has pending entries at all (1 or 0; -1: no look this time).
local stream = KEYS[1]
local group, consumer, count, base, now, ttl, idle, cursor = unpack(ARGV)
count = tonumber(count)
local out = {}
local pending = -1
if idle ~= '' then
    pending = 0
    if #redis.call('XPENDING', stream, group, '-', '+', 1) == 1 then
        pending = 1
        -- XAUTOCLAIM looks at no more than ten entries for each one it may claim. Going on
        -- from the last look's cursor (round to the start once), up to about 1,000 entries
        -- a call, reaches abandoned entries behind any number of live ones.
        local wrapped = cursor == '0-0'
        local budget = 1000
        while budget > 0 and #out < count do
            local want = count - #out
            local claimed = redis.call('XAUTOCLAIM', stream, group, consumer, idle, cursor,
                'COUNT', want)
            cursor = claimed[1]
            admit(stream, group, base, claimed[2], 1, now, ttl, out)
            -- Entries deleted while pending come back as ids only; their ack is all that is left.
            for _, entry in ipairs(claimed[3] or {}) do
                redis.call('XACK', stream, group, entry)
            end
            budget = budget - 10 * want
            if cursor == '0-0' then
                if wrapped then
                    break
                end
                wrapped = true
            end
        end
    end
end
if #out < count then
    local read = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', count - #out,
        'STREAMS', stream, '>')
    if read then
        fresh(read[1][2], out)
    end
end
return {cursor, pending, out}
"""
)

SETTLE = (
    define(FINISH, QUEUE, DELIVERED)
    + """
-- KEYS: stream, scheduled, dead. ARGV: group, consumer, base, now, ttl_ms, then per delivery
-- the values settle_args() gives: outcome, entry, id, body, result, eta, error, task, ttl_ms
-- of its task (empty strings where unused; an empty ttl is the backend's).
-- Everything for one delivery happens in one step: a retry schedules the next attempt and
-- acknowledges this one together, so a crash between the two cannot lose or double a job.
local stream, scheduled, dead = KEYS[1], KEYS[2], KEYS[3]
local group, consumer, base, now, default_ttl = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
for i = 6, #ARGV, 9 do
    local outcome, entry, id, body, result, eta, err, task, ttl = unpack(ARGV, i, i + 8)
    if ttl == '' then
        ttl = default_ttl
    end
    local jk = base .. ':job:' .. id
    if outcome == 'succeeded' then
        -- A success always counts, even from a worker whose lease ran out: the job is done,
        -- and a copy still running elsewhere will find it so when it settles.
        pcall(redis.call, 'XACK', stream, group, entry)  -- the group is gone if Redis lost
        redis.call('XDEL', stream, entry)                -- its data: the result still counts
        finish(base, jk, id, 'succeeded', ttl, now, result)
    -- Any other outcome belongs to whoever holds the entry now: if this worker's lease ran
    -- out and another worker took the job over, this worker has no say any more.
    elseif delivered(stream, group, entry, consumer) then
        redis.call('XACK', stream, group, entry)
        redis.call('XDEL', stream, entry)
        if outcome == 'retry' then
            redis.call('HINCRBY', jk, 'attempt', 1)
            redis.call('HSET', jk, 'error', err)
            if tonumber(eta) > tonumber(now) then
                redis.call('HSET', jk, 'status', 'failed', 'eta', eta, 'body', body, 'updated', now)
                redis.call('HDEL', jk, 'entry')
                redis.call('ZADD', scheduled, eta, id)
                redis.call('PUBLISH', base .. ':wake', eta)
            else
                queue(stream, jk, id, body, now)
            end
        elseif outcome == 'snooze' then
            -- The same attempt again later: no attempt spent, no error recorded.
            redis.call('HINCRBY', jk, 'snoozes', 1)
            if tonumber(eta) > tonumber(now) then
                redis.call('HSET', jk, 'status', 'scheduled', 'eta', eta, 'body', body,
                    'updated', now)
                redis.call('HDEL', jk, 'entry')
                redis.call('ZADD', scheduled, eta, id)
                redis.call('PUBLISH', base .. ':wake', eta)
            else
                queue(stream, jk, id, body, now)
            end
        elseif outcome == 'dead' then
            redis.call('XADD', dead, '*', 'id', id, 'task', task, 'body', body, 'error', err,
                'died', now)
            redis.call('HSET', jk, 'error', err)
            finish(base, jk, id, 'dead', ttl, now)
        elseif outcome == 'cancelled' then
            finish(base, jk, id, 'cancelled', ttl, now)
        elseif outcome == 'release' then
            queue(stream, jk, id, body, now)
        end
    end
end
return 1
"""
)


# Looked up once: on Python 3.11 an enum member looked up on its class, and its ``value``,
# are each a property call, which costs more than the rest of a delivery's arguments.
_RETRY, _SNOOZE, _DEAD, _RELEASE = Outcome.RETRY, Outcome.SNOOZE, Outcome.DEAD, Outcome.RELEASE


def settle_args(s: Settlement) -> list[Any]:
    """One delivery's arguments to SETTLE: outcome, entry, id, body, result, eta, error,
    task, and the record's TTL in ms ('' for the backend's)."""
    d = s.delivery
    outcome = s.outcome
    if outcome is _RETRY or outcome is _SNOOZE:
        body = s.retry_body or b""
    elif outcome is _DEAD or outcome is _RELEASE:
        body = d.body
    else:
        body = b""
    result, eta, error, ttl = settle_values(s)
    return [outcome._value_, d.receipt, d.id, body, result, eta, error, s.task, ttl]


RENEW = """
-- KEYS: stream. ARGV: group, consumer, entry ids...
-- Reset the idle time of the entries this worker still owns (XCLAIM ... JUSTID), so a
-- long job is not reclaimed from a live worker; entries another worker took are left alone.
local stream, group, consumer = KEYS[1], ARGV[1], ARGV[2]
local renewed = 0
for i = 3, #ARGV do
    if #redis.call('XPENDING', stream, group, ARGV[i], ARGV[i], 1, consumer) == 1 then
        redis.call('XCLAIM', stream, group, consumer, 0, ARGV[i], 'JUSTID')
        renewed = renewed + 1
    end
end
return renewed
"""

STATS = """
-- KEYS: stream, scheduled, dead. ARGV: group.
-- Returns {entries in the stream, entries delivered and not acknowledged, scheduled, dead}.
local ok, pending = pcall(redis.call, 'XPENDING', KEYS[1], ARGV[1])
local running = 0
if ok then
    running = pending[1]
end
return {redis.call('XLEN', KEYS[1]), running, redis.call('ZCARD', KEYS[2]),
    redis.call('XLEN', KEYS[3])}
"""

PURGE = (
    define(FINISH, UNDELIVERED, ENTRY_FIELDS)
    + """
-- KEYS: stream, scheduled. ARGV: base, group, now, ttl_ms, limit.
-- Cancel up to limit waiting jobs of the queue: stream entries no worker has been handed
-- and jobs in the scheduled set (delayed, or waiting for a retry). Returns how many were
-- cancelled.
local stream, scheduled = KEYS[1], KEYS[2]
local base, group, now, ttl, limit = ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
local purged = 0
if redis.call('EXISTS', stream) == 1 then
    for _, e in ipairs(redis.call('XRANGE', stream, undelivered(stream, group), '+', 'COUNT',
            limit)) do
        local entry, id = e[1], entry_fields(e[2])
        redis.call('XDEL', stream, entry)
        if id then
            finish(base, base .. ':job:' .. id, id, 'cancelled', ttl, now)
        end
        purged = purged + 1
    end
end
if purged < limit then
    for _, id in ipairs(redis.call('ZRANGE', scheduled, 0, limit - purged - 1)) do
        redis.call('ZREM', scheduled, id)
        finish(base, base .. ':job:' .. id, id, 'cancelled', ttl, now)
        purged = purged + 1
    end
end
return purged
"""
)
