"""The Redis backend's JobStore: the record layer's :class:`RedisJobStore` on the same Redis
(and the same queue keys) as the streams, where a queued job whose stream entry is
delivered and unacknowledged is running."""

from __future__ import annotations

import time

from asyncq.records import JobInfo

from .records import CANCEL_RECORD, RedisJobStore, define, job_info
from .scripts import DELIVERED

__all__ = ["BODY", "CANCEL", "GROUP", "INFO", "StreamJobStore"]

GROUP = "asyncq"
"""The consumer group of every queue's stream."""

INFO = (
    define(DELIVERED)
    + """
-- KEYS: stream. ARGV: group, job key.
-- The job's record as a flat list of fields; a queued job whose entry (in the stream of
-- its priority) is delivered and not yet acknowledged is running.
local record = redis.call('HGETALL', ARGV[2])
local status, entry
local stream = KEYS[1]
for i = 1, #record, 2 do
    local name = record[i]
    if name == 'status' then
        status = i + 1
    elseif name == 'entry' then
        entry = record[i + 1]
    elseif name == 'priority' then
        stream = KEYS[1] .. ':' .. record[i + 1]
    end
end
if status and record[status] == 'queued' and entry and delivered(stream, ARGV[1], entry) then
    record[status] = 'running'
end
return record
"""
)

BODY = """
-- KEYS: stream. ARGV: job key.
-- The job's body: in its record while it waits for its time, else in its stream entry (in
-- the stream of its priority) while queued or running; false once it has neither.
local state = redis.call('HMGET', ARGV[1], 'body', 'entry', 'priority')
if state[1] then
    return state[1]
end
if not state[2] then
    return false
end
local stream = KEYS[1]
if state[3] then
    stream = stream .. ':' .. state[3]
end
local found = redis.call('XRANGE', stream, state[2], state[2])
if #found == 0 then
    return false
end
local fields = found[1][2]
for i = 1, #fields, 2 do
    if fields[i] == 'body' then
        return fields[i + 1]
    end
end
return false
"""

CANCEL = (
    define(CANCEL_RECORD, DELIVERED)
    + """
-- KEYS: stream, scheduled, deferred. ARGV: base, id, now, ttl_ms, cancel channel, group.
-- Returns 1 if the job will not run (again), 0 if it had already finished or is unknown.
local stream, scheduled = KEYS[1], KEYS[2]
local base, id, now, ttl, channel, group = unpack(ARGV)
local jk = base .. ':job:' .. id
local state = redis.call('HMGET', jk, 'status', 'entry', 'priority')
local status, entry = state[1], state[2]
if state[3] then  -- its entry is in the stream of its priority
    stream = stream .. ':' .. state[3]
end
if status == 'queued' and entry and delivered(stream, group, entry) then
    status = 'running'
end
local verdict = cancel_record(base, jk, id, status, now, ttl, channel)
if verdict == 'cancelled' then
    if entry then
        redis.call('XDEL', stream, entry)
    end
    redis.call('ZREM', scheduled, id)
    redis.call('SREM', KEYS[3], id)
end
return verdict == 'finished' and 0 or 1
"""
)


class StreamJobStore(RedisJobStore):
    """Job records beside the streams: reading one asks the stream whether it runs."""

    keeps_bodies = True

    async def job_info(self, job_id: str, queue: str) -> JobInfo | None:
        keys = self.keys(queue)
        with self.redis.errors("reading a job"):
            (flat,) = await self.redis.run([("INFO", [keys.stream], [GROUP, keys.job(job_id)])])
        return job_info(job_id, queue, dict(zip(flat[::2], flat[1::2], strict=True)))

    async def job_body(self, job_id: str, queue: str) -> bytes | None:
        keys = self.keys(queue)
        with self.redis.errors("reading a job's body"):
            (body,) = await self.redis.run([("BODY", [keys.stream], [keys.job(job_id)])])
        return body or None

    async def cancel(self, job_id: str, queue: str) -> bool:
        keys = self.keys(queue)
        now, channel = repr(time.time()), self.redis.cancel_channel
        args = [keys.base, job_id, now, self.ttl_ms, channel, GROUP]
        with self.redis.errors("cancelling a job"):
            (reply,) = await self.redis.run(
                [("CANCEL", [keys.stream, keys.scheduled, keys.deferred], args)]
            )
        return bool(reply)
