"""Listing a queue's jobs by state, a page at a time, from the structure that holds them:
queued jobs are the streams' entries after the group's last-delivered id, running ones
their pending entries (of every priority, the highest first: the order a worker takes
them in; a cursor in the stream of a priority above 0 is ``<priority>/<entry>``),
scheduled ones (delayed, or waiting for a retry: their status says failed) the scheduled
set, soonest first, and dead ones the dead-letter stream. A page is one script call, which
reads each job's task and attempt from its record on the way. Also how a dead-letter
stream's entries read as ``DeadLetter``s."""

from __future__ import annotations

from typing import Any

from asyncq.errors import ErrorInfo
from asyncq.records import LISTABLE, DeadLetter, JobListing, JobStatus

from .jobstore import GROUP
from .records import QueueKeys, RedisStore, define, error_from_json
from .scripts import ENTRY_FIELDS, LEVELS, UNDELIVERED

__all__ = ["LIST", "dead_letter", "list_jobs"]

LIST = (
    define(UNDELIVERED, ENTRY_FIELDS, LEVELS)
    + """
-- KEYS: stream, scheduled, dead, levels. ARGV: base, group, status, limit, after (the
-- cursor of the previous page's last job; '' = from the start).
-- Returns up to limit rows {id, cursor, status, task, attempt, eta} ('' where unknown).
local stream, scheduled, dead, levels = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local base, group, status, limit, after = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]
local out = {}

local function add(id, cursor, state, eta)
    local record = redis.call('HMGET', base .. ':job:' .. id, 'task', 'attempt')
    table.insert(out, {id, cursor, state, record[1] or '', record[2] or '', eta})
end

-- The later of two XRANGE starts, each '-' or '(' and an entry id.
local function later(a, b)
    if a == '-' then return b elseif b == '-' then return a end
    local ams, aseq = string.match(a, '^%((%d+)-(%d+)$')
    local bms, bseq = string.match(b, '^%((%d+)-(%d+)$')
    ams, aseq, bms, bseq = tonumber(ams), tonumber(aseq), tonumber(bms), tonumber(bseq)
    if ams > bms or (ams == bms and aseq > bseq) then return a end
    return b
end

-- An entry's cursor: its id in the priority-0 stream, '<priority>/<id>' in another.
local function cursor_of(level, entry)
    return level == '0' and entry or level .. '/' .. entry
end

if status == 'queued' or status == 'running' then
    -- The streams from the highest priority down, the page going on in the cursor's.
    local after_level, after_entry
    if after ~= '' then
        after_level, after_entry = string.match(after, '^(%d+)/(.*)$')
        if not after_level then
            after_level, after_entry = '0', after
        end
    end
    for _, l in ipairs(levels_of(stream, levels)) do
        local level, s = l[1], l[2]
        local from
        if after_level then
            if level == after_level then
                from, after_level = after_entry, nil
            end
        end
        if not after_level and #out < limit then
            if status == 'queued' then
                local start = undelivered(s, group)
                if from then
                    start = later(start, '(' .. from)
                end
                for _, e in ipairs(redis.call('XRANGE', s, start, '+', 'COUNT', limit - #out)) do
                    local id = entry_fields(e[2])
                    add(id or e[1], cursor_of(level, e[1]), 'queued', '')
                end
            else
                -- Pending entries deleted meanwhile (their job settled) have no fields:
                -- skipped.
                local start = from and '(' .. from or '-'
                while #out < limit do
                    local ok, pending = pcall(redis.call, 'XPENDING', s, group, start, '+',
                        limit - #out)
                    if not ok or #pending == 0 then
                        break
                    end
                    for _, p in ipairs(pending) do
                        local entry = redis.call('XRANGE', s, p[1], p[1])[1]
                        if entry then
                            local id = entry_fields(entry[2])
                            add(id or p[1], cursor_of(level, p[1]), 'running', '')
                        end
                    end
                    start = '(' .. pending[#pending][1]
                end
            end
        end
    end
elseif status == 'scheduled' then
    -- The cursor is the last job's score and id. While that job is still in the set, the
    -- page goes on after its rank; once it is gone, after where it stood (the set orders
    -- jobs of one score by id).
    local start = 0
    if after ~= '' then
        local score, member = string.match(after, '^([^:]*):(.*)$')
        local rank = redis.call('ZRANK', scheduled, member)
        if rank and redis.call('ZSCORE', scheduled, member) == score then
            start = rank + 1
        else
            start = redis.call('ZCOUNT', scheduled, '-inf', '(' .. score)
            for _, tied in ipairs(redis.call('ZRANGEBYSCORE', scheduled, score, score)) do
                if tied > member then
                    break
                end
                start = start + 1
            end
        end
    end
    -- A job whose record is gone is skipped.
    while #out < limit do
        local found = redis.call('ZRANGE', scheduled, start, start + limit - #out - 1,
            'WITHSCORES')
        for i = 1, #found, 2 do
            local id, score = found[i], found[i + 1]
            local state = redis.call('HGET', base .. ':job:' .. id, 'status')
            if state then
                add(id, score .. ':' .. id, state, score)
            end
        end
        if #found == 0 then
            break
        end
        start = start + #found / 2
    end
elseif status == 'dead' then
    local start = after == '' and '-' or '(' .. after
    for _, e in ipairs(redis.call('XRANGE', dead, start, '+', 'COUNT', limit)) do
        local id, task = e[1], ''
        for i = 1, #e[2], 2 do
            if e[2][i] == 'id' then id = e[2][i + 1] elseif e[2][i] == 'task' then
                task = e[2][i + 1] end
        end
        table.insert(out, {id, e[1], 'dead', task, '', ''})
    end
end
return out
"""
)


async def list_jobs(
    redis: RedisStore,
    keys: QueueKeys,
    queue: str,
    status: JobStatus,
    *,
    limit: int,
    after: str | None,
) -> list[JobListing]:
    """Up to ``limit`` of ``queue``'s jobs in ``status``, after cursor ``after``."""
    if status not in LISTABLE:
        raise ValueError(f"jobs cannot be listed by status {status.value!r}")
    if limit <= 0:
        return []
    args = [keys.base, GROUP, status.value, limit, after or ""]
    with redis.errors("listing jobs"):
        (rows,) = await redis.run(
            [("LIST", [keys.stream, keys.scheduled, keys.dead, keys.levels], args)]
        )
    return [_listing(queue, row) for row in rows]


def _listing(queue: str, row: list[Any]) -> JobListing:
    job_id, cursor, status, task, attempt, eta = (value.decode() for value in row)
    return JobListing(
        job_id,
        queue,
        JobStatus(status),
        task,
        int(attempt) if attempt else 1,
        float(eta) if eta else None,
        cursor,
    )


def dead_letter(queue: str, entry: bytes, fields: dict[bytes, bytes]) -> DeadLetter:
    """An entry of ``queue``'s dead-letter stream."""
    error = fields.get(b"error")
    return DeadLetter(
        id=fields.get(b"id", entry).decode(),
        queue=queue,
        body=fields.get(b"body", b""),
        error=error_from_json(error) if error else ErrorInfo("Unknown", ""),
        died_at=float(fields.get(b"died", 0)),
        task=fields.get(b"task", b"").decode(),
        cursor=entry.decode(),
    )
