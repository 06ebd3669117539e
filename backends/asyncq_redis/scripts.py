"""The Lua scripts behind every state change of a job on the Redis backend's streams.

Each script works on one queue's keys (:class:`~asyncq_redis.records.QueueKeys`), which
share a hash tag and so one Redis Cluster slot; job records and idempotency keys are built
inside the scripts from ``base``, and their fragments (finish, claim, cancel) come from the
record layer (:mod:`asyncq_redis.records.lua`).

On this backend a record also keeps ``entry`` (its stream entry while queued) and ``body``
(only while it waits in the scheduled set). Its ``status`` is queued, scheduled, failed or
how it ended: a queued job whose stream entry is delivered and unacknowledged is running
(see ``DELIVERED``), which is what reading a record and cancelling one look at.

Priorities: the queue's stream holds its priority-0 jobs, as it did before priorities
existed, and each priority above 0 that was ever used has a stream of its own beside it,
``<stream>:<priority>``, with the same consumer group; the set ``levels`` names those
priorities (``LEVELS``). A record of a job above 0 keeps ``priority``, which says which
stream its entry is in. A queue that never had a priority has neither, and its scripts do
what they did before.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

from asyncq.settlement import Outcome, Settlement

from .records import (
    CLAIM,
    FINISH,
    IS_FINISHED,
    SCRIPT_CHUNK,
    Fragment,
    QueueKeys,
    define,
    settle_values,
)

__all__ = [
    "DELIVERED",
    "ENQUEUE",
    "ENTRY_FIELDS",
    "LEVELS",
    "QUEUE",
    "RENEW",
    "SETTLE",
    "TAKE",
    "UNDELIVERED",
    "settle_args",
    "settle_chunks",
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

LEVELS = Fragment("""
-- The queue's streams, highest priority first, each {priority, stream}: those of the
-- priorities above 0 in the set `levels` (each `stream` .. ':' .. priority), then `stream`
-- itself, priority 0.
local function levels_of(stream, levels)
    local found = redis.call('SMEMBERS', levels)
    table.sort(found, function(a, b) return tonumber(a) > tonumber(b) end)
    local out = {}
    for _, level in ipairs(found) do
        table.insert(out, {level, stream .. ':' .. level})
    end
    table.insert(out, {'0', stream})
    return out
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
-- KEYS: stream (the one of the jobs' priority), scheduled, levels. ARGV: base, now,
-- priority, group, then per job: id, body, task, eta ('' = now), key ('' = none).
-- Returns each job's id: a key already held returns its holder's id.
local stream, scheduled, levels = KEYS[1], KEYS[2], KEYS[3]
local base, now, level, group = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local ids = {}
local wake = false
if level ~= '0' and redis.call('SADD', levels, level) == 1 then
    -- A priority's first job makes its stream, with the group, and tells the workers: their
    -- blocking reads cover the streams they know of (see backend.py).
    pcall(redis.call, 'XGROUP', 'CREATE', stream, group, '0', 'MKSTREAM')
    redis.call('PUBLISH', base .. ':wake', 'levels')
end
for i = 5, #ARGV, 5 do
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
        if level ~= '0' then  -- where its entry is, now and after a delay or a retry
            redis.call('HSET', jk, 'priority', level)
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
local function admit(stream, level, group, base, entries, redelivered, now, ttl, out)
    for _, e in ipairs(entries) do
        local entry = e[1]
        local id, body = entry_fields(e[2])
        if not id or not body then
            -- Not ours (written by hand?): hand it over so the worker dead-letters it.
            table.insert(out, {entry, id or entry, body or '', redelivered, level})
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
                table.insert(out, {entry, id, body, redelivered, level})
            end
        end
    end
end

local function fresh(entries, level, out)
    for _, e in ipairs(entries) do
        local entry = e[1]
        local id, body = entry_fields(e[2])
        table.insert(out, {entry, id or entry, body or '', 0, level})
    end
end
""",
    (FINISH, IS_FINISHED, ENTRY_FIELDS),
)

TAKE = (
    define(_ADMIT, LEVELS)
    + """
-- KEYS: stream, levels. ARGV: group, consumer, count, base, now, ttl_ms, reclaim_idle_ms
-- ('' = skip), then for each priority whose last look for abandoned entries stopped part
-- way: the priority and its cursor (none given: from the start, '0-0').
-- Reclaims entries whose worker stopped renewing them (idle past the visibility timeout),
-- then reads new ones, up to count in all, each time from the highest priority down.
-- Returns {cursors, pending, rows, levels}: where this look stopped in each stream it
-- looked at (priority, cursor, ...); whether the group has pending entries at all (1 or
-- 0; -1: no look this time); rows {entry, id, body, redelivered, priority}; and the
-- priorities above 0 the queue has streams for, highest first.
local stream, levels_key = KEYS[1], KEYS[2]
local group, consumer, count, base, now, ttl, idle = unpack(ARGV, 1, 7)
count = tonumber(count)
local cursors = {}
for i = 8, #ARGV, 2 do
    cursors[ARGV[i]] = ARGV[i + 1]
end
local levels = levels_of(stream, levels_key)
local out, looked = {}, {}
local pending = -1
if idle ~= '' then
    pending = 0
    -- XAUTOCLAIM looks at no more than ten entries for each one it may claim. Going on
    -- from the last look's cursor (round to the start once), up to about 1,000 entries a
    -- call, reaches abandoned entries behind any number of live ones.
    local budget = 1000
    for _, l in ipairs(levels) do
        if budget <= 0 or #out >= count then
            break
        end
        local level, s = l[1], l[2]
        if #redis.call('XPENDING', s, group, '-', '+', 1) == 1 then
            pending = 1
            local cursor = cursors[level] or '0-0'
            local wrapped = cursor == '0-0'
            while budget > 0 and #out < count do
                local want = count - #out
                local claimed = redis.call('XAUTOCLAIM', s, group, consumer, idle, cursor,
                    'COUNT', want)
                cursor = claimed[1]
                admit(s, level, group, base, claimed[2], 1, now, ttl, out)
                -- Entries deleted while pending come back as ids only; their ack is all that
                -- is left.
                for _, entry in ipairs(claimed[3] or {}) do
                    redis.call('XACK', s, group, entry)
                end
                budget = budget - 10 * want
                if cursor == '0-0' then
                    if wrapped then
                        break
                    end
                    wrapped = true
                end
            end
            table.insert(looked, level)
            table.insert(looked, cursor)
        end
    end
end
for _, l in ipairs(levels) do
    if #out >= count then
        break
    end
    local read = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', count - #out,
        'STREAMS', l[2], '>')
    if read then
        fresh(read[1][2], l[1], out)
    end
end
local known = {}
for i = 1, #levels - 1 do
    known[i] = levels[i][1]
end
return {looked, pending, out, known}
"""
)

SETTLE = (
    define(FINISH, QUEUE, DELIVERED)
    + """
-- KEYS: stream (the one the deliveries came from: they are of one priority, which a retry
-- or a release keeps by going back to it), scheduled, dead, deferred.
-- ARGV: group, consumer, base, now, ttl_ms, then per delivery
-- the values settle_args() gives: outcome, entry, id, body, result, eta, error, task, ttl_ms
-- of its task (empty strings where unused; an empty ttl is the backend's).
-- Everything for one delivery happens in one step: a retry schedules the next attempt and
-- acknowledges this one together, so a crash between the two cannot lose or double a job.
local stream, scheduled, dead, deferred = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local group, consumer, base, now, default_ttl = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
-- A retry or a snooze: wait in the scheduled set as `waiting` until eta, or queue at once.
local function again(jk, id, body, eta, waiting)
    if tonumber(eta) > tonumber(now) then
        redis.call('HSET', jk, 'status', waiting, 'eta', eta, 'body', body, 'updated', now)
        redis.call('HDEL', jk, 'entry')
        redis.call('ZADD', scheduled, eta, id)
        redis.call('PUBLISH', base .. ':wake', eta)
    else
        queue(stream, jk, id, body, now)
    end
end
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
            again(jk, id, body, eta, 'failed')
        elseif outcome == 'snooze' then
            -- The same attempt again later: no attempt spent, no error recorded.
            redis.call('HINCRBY', jk, 'snoozes', 1)
            again(jk, id, body, eta, 'scheduled')
        elseif outcome == 'dead' then
            redis.call('XADD', dead, '*', 'id', id, 'task', task, 'body', body, 'error', err,
                'died', now)
            redis.call('HSET', jk, 'error', err)
            finish(base, jk, id, 'dead', ttl, now)
        elseif outcome == 'cancelled' then
            finish(base, jk, id, 'cancelled', ttl, now)
        elseif outcome == 'release' then
            queue(stream, jk, id, body, now)
        elseif outcome == 'defer' then
            -- Over a limit, not started: back unchanged once a permit can be had. It stays
            -- queued, and the deferred set has the queue's depths count it as pending.
            if tonumber(eta) > tonumber(now) then
                redis.call('HSET', jk, 'eta', eta, 'body', body, 'updated', now)
                redis.call('HDEL', jk, 'entry')
                redis.call('ZADD', scheduled, eta, id)
                redis.call('SADD', deferred, id)
                redis.call('PUBLISH', base .. ':wake', eta)
            else
                queue(stream, jk, id, body, now)
            end
        end
    end
end
return 1
"""
)


# Looked up once: on Python 3.11 an enum member looked up on its class, and its ``value``,
# are each a property call, which costs more than the rest of a delivery's arguments.
_RETRY, _SNOOZE, _DEAD, _RELEASE = Outcome.RETRY, Outcome.SNOOZE, Outcome.DEAD, Outcome.RELEASE
_DEFER = Outcome.DEFER


def settle_args(s: Settlement) -> list[Any]:
    """One delivery's arguments to SETTLE: outcome, entry, id, body, result, eta, error,
    task, and the record's TTL in ms ('' for the backend's)."""
    d = s.delivery
    outcome = s.outcome
    if outcome is _RETRY or outcome is _SNOOZE:
        body = s.retry_body or b""
    elif outcome is _DEAD or outcome is _RELEASE or outcome is _DEFER:
        body = d.body
    else:
        body = b""
    result, eta, error, ttl = settle_values(s)
    return [outcome._value_, d.receipt, d.id, body, result, eta, error, s.task, ttl]


def settle_chunks(
    settlements: Sequence[Settlement], keys: Callable[[str], QueueKeys]
) -> list[tuple[tuple[QueueKeys, int], list[Settlement]]]:
    """The settlements per stream (queue and priority) and SCRIPT_CHUNK at a time, with
    their queue's keys and priority: one SETTLE call each."""
    by_stream: dict[tuple[str, int], list[Settlement]] = defaultdict(list)
    for s in settlements:
        d = s.delivery
        by_stream[d.queue, d.priority].append(s)
    return [
        ((keys(q), priority), items[start : start + SCRIPT_CHUNK])
        for (q, priority), items in by_stream.items()
        for start in range(0, len(items), SCRIPT_CHUNK)
    ]


RENEW = """
-- KEYS: stream (of the entries' priority). ARGV: group, consumer, entry ids...
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
