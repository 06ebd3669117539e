"""The Lua scripts behind every state change of a job on Redis.

Each script works on one queue's keys, which share a hash tag (``prefix:{queue}:...``) and
so one Redis Cluster slot. Job records (``<base>:job:<id>``) and idempotency keys
(``<base>:key:<key>``) are built inside the scripts from ``base`` (the tagged prefix), so
they sit in the same slot. A script runs atomically: no other client sees a half-done step,
which is what the invariants below rest on.

A job record is a hash: ``status`` (queued, scheduled, failed, or how it ended; a queued job
whose stream entry is delivered and unacknowledged is running, see INFO), ``task``,
``attempt``, ``entry`` (its stream entry while queued), ``body`` (only while it waits in the
scheduled set), ``eta``, ``result``, ``error`` (JSON), ``key``, ``cancel`` (a cancellation
asked for while running), ``updated``.
"""

from __future__ import annotations

# Finish a job: store its end, free its key (a dead or cancelled job frees it, a success
# holds it for the result TTL) and tell whoever waits on it.
FINISH = """
local function finish(base, jk, id, status, ttl, now, result)
    if result then  -- a success; '' when its task does not store results
        redis.call('HSET', jk, 'status', status, 'updated', now)
        if result ~= '' then
            redis.call('HSET', jk, 'result', result)
        end
        redis.call('HDEL', jk, 'entry', 'body', 'eta', 'cancel', 'error')
    else
        redis.call('HSET', jk, 'status', status, 'updated', now)
        redis.call('HDEL', jk, 'entry', 'body', 'eta', 'cancel')
    end
    redis.call('PEXPIRE', jk, ttl)
    local key = redis.call('HGET', jk, 'key')
    if key then
        local kk = base .. ':key:' .. key
        if status == 'succeeded' then
            redis.call('PEXPIRE', kk, ttl)
        elseif redis.call('GET', kk) == id then
            redis.call('DEL', kk)
        end
    end
    redis.call('PUBLISH', base .. ':done:' .. id, status)
end
"""

# Put a job into its stream, ready for a worker.
_QUEUE = """
local function queue(stream, jk, id, body, now)
    local entry = redis.call('XADD', stream, '*', 'id', id, 'body', body)
    redis.call('HSET', jk, 'status', 'queued', 'entry', entry, 'updated', now)
    redis.call('HDEL', jk, 'body', 'eta')
end
"""

ENQUEUE = """
-- KEYS: stream, scheduled. ARGV: base, now, then per job: id, body, task, eta ('' = now),
-- key ('' = none). Returns each job's id: a key already held returns its holder's id.
-- The idempotency key is claimed in the same step as the job is stored, so producers
-- racing with one key create exactly one job.
local stream, scheduled = KEYS[1], KEYS[2]
local base, now = ARGV[1], ARGV[2]
local ids = {}
local wake = false
for i = 3, #ARGV, 5 do
    local id, body, task, eta, key = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
    local existing = false
    if key ~= '' then
        local kk = base .. ':key:' .. key
        existing = redis.call('GET', kk)
        if not existing then
            redis.call('SET', kk, id)
        end
    end
    local jk = base .. ':job:' .. id
    local status = redis.call('HGET', jk, 'status')
    if existing then
        table.insert(ids, existing)
    elseif status and status ~= 'dead' and status ~= 'cancelled' then
        -- The same job again: a pipeline re-sent after a dropped connection. Only a dead
        -- or cancelled job (a replay) is stored anew under its old id.
        table.insert(ids, id)
    else
        if status then
            redis.call('DEL', jk)  -- a replay: nothing of the dead job's record carries over
        end
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
        if key ~= '' then
            redis.call('HSET', jk, 'key', key)
        end
        table.insert(ids, id)
    end
end
if wake then
    redis.call('PUBLISH', base .. ':wake', now)
end
return ids
"""

# Admit entries taken over from a lost worker: each runs again unless it must not. One that
# ended meanwhile (a copy of it finished elsewhere) is acknowledged and skipped; one whose
# cancellation was asked for while its worker was gone ends cancelled.
#
# Fresh entries need no such look: an entry is added only together with its job's record
# set to queued, and a cancellation before delivery deletes it. A job is running exactly
# while its entry is delivered and unacknowledged, which is what the INFO script reads.
_ADMIT = (
    FINISH
    + """
local function admit(stream, group, base, entries, redelivered, now, ttl, out)
    for _, e in ipairs(entries) do
        local entry, fields = e[1], e[2]
        local id, body
        for i = 1, #fields, 2 do
            if fields[i] == 'id' then id = fields[i + 1] elseif fields[i] == 'body' then
                body = fields[i + 1] end
        end
        if not id or not body then
            -- Not ours (written by hand?): hand it over so the worker dead-letters it.
            table.insert(out, {entry, id or entry, body or '', redelivered})
        else
            local jk = base .. ':job:' .. id
            local state = redis.call('HMGET', jk, 'status', 'cancel')
            local status = state[1]
            if status == 'succeeded' or status == 'dead' or status == 'cancelled' then
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
        local entry, fields = e[1], e[2]
        local id, body = entry, ''
        for i = 1, #fields, 2 do
            if fields[i] == 'id' then id = fields[i + 1] elseif fields[i] == 'body' then
                body = fields[i + 1] end
        end
        table.insert(out, {entry, id, body, 0})
    end
end
"""
)

TAKE = (
    _ADMIT
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
    FINISH
    + _QUEUE
    + """
local function mine(stream, group, entry, consumer)
    local ok, found = pcall(redis.call, 'XPENDING', stream, group, entry, entry, 1, consumer)
    return ok and #found == 1
end

-- KEYS: stream, scheduled, dead. ARGV: group, consumer, base, now, ttl_ms, then per delivery:
-- outcome, entry, id, body, result, eta, error, task, ttl_ms of its task (empty strings
-- where unused; an empty ttl is the backend's).
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
    elseif mine(stream, group, entry, consumer) then
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

PROMOTE = (
    _QUEUE
    + """
-- KEYS: scheduled, stream. ARGV: base, now, limit.
-- Move due jobs from the scheduled set into the stream. ZREM decides who moves a job, so
-- however many workers run this at once, each job is moved exactly once.
-- Returns {moved, score of the next job still waiting or ''}.
local scheduled, stream = KEYS[1], KEYS[2]
local base, now, limit = ARGV[1], ARGV[2], ARGV[3]
local due = redis.call('ZRANGEBYSCORE', scheduled, '-inf', now, 'LIMIT', 0, limit)
local moved = 0
for _, id in ipairs(due) do
    if redis.call('ZREM', scheduled, id) == 1 then
        local jk = base .. ':job:' .. id
        local body = redis.call('HGET', jk, 'body')
        if body then
            queue(stream, jk, id, body, now)
            moved = moved + 1
        end
    end
end
local next = redis.call('ZRANGE', scheduled, 0, 0, 'WITHSCORES')
return {moved, next[2] or ''}
"""
)

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

CANCEL = (
    FINISH
    + """
-- KEYS: stream, scheduled. ARGV: base, id, now, ttl_ms, cancel channel, group.
-- Returns 1 if the job will not run (again), 0 if it had already finished or is unknown.
local stream, scheduled = KEYS[1], KEYS[2]
local base, id, now, ttl, channel, group = unpack(ARGV)
local jk = base .. ':job:' .. id
local status = redis.call('HGET', jk, 'status')
if not status or status == 'succeeded' or status == 'dead' or status == 'cancelled' then
    return 0
end
local entry = redis.call('HGET', jk, 'entry')
if status == 'queued' and entry then
    local ok, found = pcall(redis.call, 'XPENDING', stream, group, entry, entry, 1)
    if ok and #found == 1 then
        status = 'running'  -- delivered: a worker holds it
    end
end
if status == 'running' then
    -- Its worker cancels the handler and settles it; the flag covers a worker that is gone.
    redis.call('HSET', jk, 'cancel', 1)
    redis.call('PUBLISH', channel, id)
    return 1
end
if entry then
    redis.call('XDEL', stream, entry)
end
redis.call('ZREM', scheduled, id)
finish(base, jk, id, 'cancelled', ttl, now)
return 1
"""
)

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

INFO = """
-- KEYS: stream. ARGV: group, job key.
-- The job's record as a flat list of fields; a queued job whose entry is delivered and
-- not yet acknowledged is running.
local record = redis.call('HGETALL', ARGV[2])
local status, entry
for i = 1, #record, 2 do
    if record[i] == 'status' then status = i + 1 elseif record[i] == 'entry' then
        entry = record[i + 1] end
end
if status and record[status] == 'queued' and entry then
    local ok, found = pcall(redis.call, 'XPENDING', KEYS[1], ARGV[1], entry, entry, 1)
    if ok and #found == 1 then
        record[status] = 'running'
    end
end
return record
"""

PURGE = (
    FINISH
    + """
-- KEYS: stream, scheduled. ARGV: base, group, now, ttl_ms, limit.
-- Cancel up to limit waiting jobs of the queue: stream entries no worker has been handed
-- (after the group's last-delivered id: every earlier entry still in the stream is pending,
-- so running) and jobs in the scheduled set (delayed, or waiting for a retry). Returns how
-- many were cancelled.
local stream, scheduled = KEYS[1], KEYS[2]
local base, group, now, ttl, limit = ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
local after = '-'
local ok, groups = pcall(redis.call, 'XINFO', 'GROUPS', stream)
if ok then
    for _, g in ipairs(groups) do
        local fields = {}
        for i = 1, #g, 2 do fields[g[i]] = g[i + 1] end
        if fields['name'] == group then
            after = '(' .. fields['last-delivered-id']
        end
    end
end
local purged = 0
if redis.call('EXISTS', stream) == 1 then
    for _, e in ipairs(redis.call('XRANGE', stream, after, '+', 'COUNT', limit)) do
        local entry, fields, id = e[1], e[2], nil
        for i = 1, #fields, 2 do
            if fields[i] == 'id' then id = fields[i + 1] end
        end
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
