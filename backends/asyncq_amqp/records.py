"""The AMQP backend's job records, kept in Redis, built on the Redis record layer
(:mod:`asyncq_redis.records`).

RabbitMQ moves messages; it cannot look one up by id, hold a result, or say whether an
idempotency key is taken. Those live here, one hash per job under
``<prefix>:amqp:{queue}:job:<id>`` with the same fields as on the Redis backend (so the
layer's codec reads them), plus ``cancel`` while a cancellation waits for the running
worker. Per queue, the sets ``:running`` and ``:scheduled`` count what RabbitMQ cannot
report (unacknowledged and delayed jobs). Every change is one Lua script, atomic on its
queue's keys, and a batch is one pipelined round trip.

The records also make AMQP's redeliveries safe: a message whose job already ended, or
that carries an older attempt than the record (a copy left behind by a connection lost
between a retry's publish and its ack), is acknowledged and skipped instead of run.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from asyncq_redis.records import (
    CANCEL_RECORD,
    CLAIM,
    FINISH,
    IS_FINISHED,
    RELEASE_KEY,
    SCRIPT_CHUNK,
    STORE_SCRIPTS,
    Call,
    QueueKeys,
    RedisJobStore,
    RedisStore,
    count_calls,
    define,
    job_info,
    kept_minute_keys,
    read_minute_counts,
    settle_chunks,
    settle_values,
)

from asyncq.backend import Envelope, Outcome, Settlement
from asyncq.records import JobInfo, MinuteCounts

__all__ = ["Admission", "RecordStore"]

ENQUEUE = (
    define(CLAIM)
    + """
-- KEYS: scheduled. ARGV: base, now, ttl_ms, then per job: id, task, eta ('' = now), key
-- ('' = none), replay (0/1). Returns per job {id, publish}: a key already held returns its
-- holder's id and 0; a job stored anew returns 1. A record that exists already is left as
-- it is (the same enqueue sent twice, or a worker that saw the message first and may even
-- have finished it), unless the job is a replay of a dead or cancelled one.
--
-- A key held by a job whose publish may not have reached RabbitMQ (UNSURE: its enqueue
-- failed, so no caller has its id) and that no worker has started goes to this job: the
-- unsure one is ended as cancelled, so a copy of it that did reach the queue is skipped.
local scheduled = KEYS[1]
local base, now, ttl = ARGV[1], ARGV[2], ARGV[3]
local out = {}
for i = 4, #ARGV, 5 do
    local id, task, eta, key, replay = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
    local jk = base .. ':job:' .. id
    if key ~= '' then
        local kk = base .. ':key:' .. key
        local holder = redis.call('GET', kk)
        if holder and holder ~= id then
            local hk = base .. ':job:' .. holder
            local held = redis.call('HMGET', hk, 'unsure', 'status')
            if held[1] and (held[2] == 'queued' or held[2] == 'scheduled') then
                redis.call('HSET', hk, 'status', 'cancelled', 'updated', now)
                redis.call('HDEL', hk, 'unsure', 'eta', 'key')
                redis.call('PEXPIRE', hk, ttl)
                redis.call('SREM', scheduled, holder)
                redis.call('DEL', kk)
            end
        end
    end
    local claimed, got = claim(base, jk, id, key, replay == '1')
    if claimed == 'known' then
        redis.call('HSETNX', jk, 'task', task)
    elseif claimed == 'new' then
        local status = 'queued'
        if eta ~= '' and tonumber(eta) > tonumber(now) then
            status = 'scheduled'
            redis.call('HSET', jk, 'eta', eta)
            redis.call('SADD', scheduled, id)
        end
        redis.call('HSET', jk, 'status', status, 'task', task, 'attempt', 1, 'updated', now)
    end
    table.insert(out, {got, claimed == 'new' and 1 or 0})
end
return out
"""
)

UNSURE = """
-- KEYS: scheduled. ARGV: base, ids... Jobs whose publish failed without an answer (the
-- connection went): the message may be in the queue or not. Their records stay, marked,
-- so that an enqueue of the same key (the producer trying again) replaces them instead of
-- returning an id whose message may not exist; START clears the mark.
local base = ARGV[1]
for i = 2, #ARGV do
    local jk = base .. ':job:' .. ARGV[i]
    local status = redis.call('HGET', jk, 'status')
    if status == 'queued' or status == 'scheduled' then
        redis.call('HSET', jk, 'unsure', 1)
    end
end
return 1
"""

FORGET = (
    define(RELEASE_KEY)
    + """
-- KEYS: scheduled. ARGV: base, ids... Undo ENQUEUE for jobs the broker refused: their
-- records and key claims go, as if they had never been enqueued.
local base = ARGV[1]
for i = 2, #ARGV do
    local id = ARGV[i]
    local jk = base .. ':job:' .. id
    local key = redis.call('HGET', jk, 'key')
    if key then
        release_key(base, key, id)
    end
    redis.call('DEL', jk)
    redis.call('SREM', KEYS[1], id)
end
return 1
"""
)

START = (
    define(FINISH, IS_FINISHED)
    + """
-- KEYS: scheduled, running. ARGV: base, now, ttl_ms, then per delivery: id, attempt,
-- redelivered (0/1). Returns per delivery 0 (skip: acknowledge it, do not run), 1 (run)
-- or 2 (run; an earlier delivery's worker was lost while running it).
local scheduled, running = KEYS[1], KEYS[2]
local base, now, ttl = ARGV[1], ARGV[2], ARGV[3]
local out = {}
for i = 4, #ARGV, 3 do
    local id, attempt, redelivered = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2]
    local jk = base .. ':job:' .. id
    local state = redis.call('HMGET', jk, 'status', 'cancel', 'attempt')
    local status = state[1]
    local verdict = 1
    if finished(status) then
        verdict = 0
    elseif state[3] and attempt < tonumber(state[3]) then
        verdict = 0  -- a stale copy of an attempt that already failed
    elseif state[2] then
        finish(base, jk, id, 'cancelled', ttl, now)
        redis.call('SREM', running, id)
        verdict = 0
    elseif status == 'running' and redelivered == '1' then
        verdict = 2
    end
    if verdict ~= 0 then
        redis.call('HSET', jk, 'status', 'running', 'updated', now)
        redis.call('HDEL', jk, 'eta', 'unsure')
        redis.call('SADD', running, id)
        redis.call('SREM', scheduled, id)
        redis.call('SREM', base .. ':deferred', id)
    end
    table.insert(out, verdict)
end
return out
"""
)

SETTLE = (
    define(FINISH)
    + """
-- KEYS: scheduled, running. ARGV: base, now, ttl_ms, then per delivery the values
-- settle_args() gives: outcome, id, result, eta, error, task, next attempt, ttl_ms of its
-- task (empty strings where unused; an empty ttl is the store's).
local scheduled, running = KEYS[1], KEYS[2]
local base, now, default_ttl = ARGV[1], ARGV[2], ARGV[3]
-- A retry or a snooze: `waiting` (and in the scheduled set) until eta, or queued at once.
local function again(jk, id, eta, waiting)
    if tonumber(eta) > tonumber(now) then
        redis.call('HSET', jk, 'status', waiting, 'eta', eta)
        redis.call('SADD', scheduled, id)
    else
        redis.call('HSET', jk, 'status', 'queued')
    end
end
for i = 4, #ARGV, 8 do
    local outcome, id, result, eta, err, task, attempt, ttl = unpack(ARGV, i, i + 7)
    if ttl == '' then
        ttl = default_ttl
    end
    local jk = base .. ':job:' .. id
    redis.call('SREM', running, id)
    if task ~= '' then
        redis.call('HSETNX', jk, 'task', task)
    end
    if outcome == 'succeeded' then
        finish(base, jk, id, 'succeeded', ttl, now, result)
    elseif outcome == 'retry' then
        -- The attempt is set, not incremented: settling the same batch twice is harmless.
        redis.call('HSET', jk, 'attempt', attempt, 'error', err, 'updated', now)
        again(jk, id, eta, 'failed')
    elseif outcome == 'snooze' then
        -- Counted once per settle: a batch settled twice (a retried call) counts twice,
        -- which only overstates how often it snoozed.
        redis.call('HINCRBY', jk, 'snoozes', 1)
        redis.call('HSET', jk, 'updated', now)
        again(jk, id, eta, 'scheduled')
    elseif outcome == 'dead' then
        redis.call('HSET', jk, 'error', err)
        finish(base, jk, id, 'dead', ttl, now)
    elseif outcome == 'cancelled' then
        finish(base, jk, id, 'cancelled', ttl, now)
    elseif outcome == 'release' then
        if redis.call('HGET', jk, 'status') == 'running' then
            redis.call('HSET', jk, 'status', 'queued', 'updated', now)
        end
    elseif outcome == 'defer' then
        -- Over a limit, not started: queued again, due at eta (its message waits in the
        -- delay queues); the deferred set has the queue's depths count it as pending.
        redis.call('HSET', jk, 'status', 'queued', 'eta', eta, 'updated', now)
        redis.call('SADD', scheduled, id)
        redis.call('SADD', base .. ':deferred', id)
    end
end
return 1
"""
)

CANCEL = (
    define(CANCEL_RECORD)
    + """
-- KEYS: scheduled. ARGV: base, id, now, ttl_ms, cancel channel.
-- Returns 1 if the job will not run (again), 0 if it had already finished or is unknown.
-- A queued or delayed job's message stays in RabbitMQ; the worker that receives it finds
-- the record cancelled and drops it.
local base, id, now, ttl, channel = unpack(ARGV)
local jk = base .. ':job:' .. id
local verdict = cancel_record(base, jk, id, redis.call('HGET', jk, 'status'), now, ttl, channel)
if verdict == 'cancelled' then
    redis.call('SREM', KEYS[1], id)
    redis.call('SREM', base .. ':deferred', id)
end
return verdict == 'finished' and 0 or 1
"""
)

PURGE = (
    define(FINISH, IS_FINISHED)
    + """
-- KEYS: scheduled, running. ARGV: base, now, ttl_ms, limit, then ids of messages taken off
-- the work queue. Cancels those jobs (unless they already ended: a stale copy), then up to
-- limit of the delayed or retrying ones, whose messages are dropped when they come due.
-- Returns how many jobs were cancelled or dropped.
local scheduled, running = KEYS[1], KEYS[2]
local base, now, ttl, limit = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local purged = 0
local function cancel(id)
    local jk = base .. ':job:' .. id
    local status = redis.call('HGET', jk, 'status')
    if status and not finished(status) then
        finish(base, jk, id, 'cancelled', ttl, now)
    end
    redis.call('SREM', running, id)
    redis.call('SREM', scheduled, id)
    redis.call('SREM', base .. ':deferred', id)
end
for i = 5, #ARGV do
    cancel(ARGV[i])
    purged = purged + 1
end
if limit > 0 then
    for _, id in ipairs(redis.call('SPOP', scheduled, limit)) do
        cancel(id)
        purged = purged + 1
    end
end
return purged
"""
)

_SCRIPTS = {
    "ENQUEUE": ENQUEUE,
    "FORGET": FORGET,
    "UNSURE": UNSURE,
    "START": START,
    "SETTLE": SETTLE,
    "CANCEL": CANCEL,
    "PURGE": PURGE,
    **STORE_SCRIPTS,
}


class Admission:
    """What START decided for one delivery."""

    SKIP = 0
    RUN = 1
    RUN_REDELIVERED = 2


class RecordStore(RedisJobStore):
    """Job records, queue counters, cancellation requests and heartbeats in Redis."""

    def __init__(self, url: str, *, prefix: str, result_ttl: float) -> None:
        redis = RedisStore(
            url, prefix=prefix, scripts=_SCRIPTS, max_connections=64, owner="the AMQP backend"
        )
        super().__init__(redis, prefix=prefix, ttl_ms=max(int(result_ttl * 1000), 1))

    # -- connection ------------------------------------------------------------------------
    async def connect(self) -> None:
        await self.redis.connect("connecting to the record store")

    async def close(self) -> None:
        await self.redis.close()

    # -- the life of a job -----------------------------------------------------------------
    async def enqueue(self, envelopes: Sequence[Envelope]) -> list[tuple[str, bool]]:
        """Store the jobs' records; per job, its id (the key holder's, if the key was taken)
        and whether its message is to be published."""
        now, ttl = repr(time.time()), self.ttl_ms

        def call(keys: QueueKeys, jobs: Sequence[Envelope]) -> Call:
            args: list[Any] = [keys.base, now, ttl]
            for env in jobs:
                eta = "" if env.eta is None else repr(env.eta)
                args += [env.id, env.task, eta, env.key or "", 1 if env.replay else 0]
            return ("ENQUEUE", [keys.scheduled], args)

        with self.redis.errors("storing job records"):
            return await self.redis.run_chunked(envelopes, self.keys, call, _stored)

    async def forget(self, queue: str, ids: Sequence[str]) -> None:
        keys = self.keys(queue)
        with self.redis.errors("undoing refused jobs"):
            await self.redis.run([("FORGET", [keys.scheduled], [keys.base, *ids])])

    async def unsure(self, queue: str, ids: Sequence[str]) -> None:
        """Mark jobs whose publish got no answer: a later enqueue of the same key replaces
        them (see UNSURE)."""
        keys = self.keys(queue)
        with self.redis.errors("marking jobs whose publish went unanswered"):
            await self.redis.run([("UNSURE", [keys.scheduled], [keys.base, *ids])])

    async def register(self, queues: Sequence[str]) -> None:
        with self.redis.errors("registering queues"):
            await self.redis.register(queues)

    async def queues(self) -> list[str]:
        with self.redis.errors("listing queues"):
            return await self.redis.registered()

    async def start(
        self, batches: Sequence[tuple[str, Sequence[tuple[str, int, bool]]]]
    ) -> list[int]:
        """Admit deliveries, given per queue as (id, attempt, redelivered); returns an
        :class:`Admission` per delivery, in order."""
        now, ttl = repr(time.time()), self.ttl_ms
        calls = []
        for q, items in batches:
            keys = self.keys(q)
            for start in range(0, len(items), SCRIPT_CHUNK):
                args: list[Any] = [keys.base, now, ttl]
                for job_id, attempt, redelivered in items[start : start + SCRIPT_CHUNK]:
                    args += [job_id, attempt, 1 if redelivered else 0]
                calls.append(("START", [keys.scheduled, keys.running], args))
        with self.redis.errors("admitting jobs"):
            replies = await self.redis.run(calls)
        return [int(v) for reply in replies for v in reply]

    async def settle(self, settlements: Sequence[Settlement]) -> None:
        now, ttl = repr(time.time()), self.ttl_ms
        calls = []
        for keys, chunk in settle_chunks(settlements, self.keys):
            args: list[Any] = [keys.base, now, ttl]
            for s in chunk:
                args += settle_args(s)
            calls.append(("SETTLE", [keys.scheduled, keys.running], args))
        calls += count_calls(settlements, self.keys, float(now))
        with self.redis.errors("recording settled jobs"):
            await self.redis.run(calls)

    async def minute_counts(self, queues: Sequence[str], minutes: int) -> list[MinuteCounts]:
        return await read_minute_counts(self.redis, self.keys, queues, minutes)

    async def cancel(self, job_id: str, queue: str) -> bool:
        keys = self.keys(queue)
        args = [keys.base, job_id, repr(time.time()), self.ttl_ms, self.redis.cancel_channel]
        with self.redis.errors("cancelling a job"):
            (reply,) = await self.redis.run([("CANCEL", [keys.scheduled], args)])
        return bool(reply)

    async def purge(self, queue: str, taken: Sequence[str], limit: int) -> int:
        """Cancel the jobs whose messages were ``taken`` off the work queue, and up to
        ``limit`` delayed or retrying ones; how many in all."""
        keys = self.keys(queue)
        args: list[Any] = [keys.base, repr(time.time()), self.ttl_ms, limit, *taken]
        with self.redis.errors("purging a queue"):
            (purged,) = await self.redis.run([("PURGE", [keys.scheduled, keys.running], args)])
        return int(purged)

    async def unregister(self, queue: str) -> None:
        with self.redis.errors("removing a queue"):
            await self.redis.unregister(queue, *kept_minute_keys(self.keys(queue)))

    # -- reading ---------------------------------------------------------------------------
    async def job_info(self, job_id: str, queue: str) -> JobInfo | None:
        # A record's status is the whole truth here: the admission sets it to running.
        with self.redis.errors("reading a job"):
            record: Any = await self.redis.client.hgetall(self.keys(queue).job(job_id))
        return job_info(job_id, queue, record)

    async def ids(self, queue: str, which: str) -> list[str]:
        """The ids of a queue's ``scheduled`` or ``running`` jobs, sorted."""
        keys = self.keys(queue)
        with self.redis.errors(f"listing {which} jobs"):
            members = await self.redis.client.smembers(
                keys.scheduled if which == "scheduled" else keys.running
            )
        return sorted(m.decode() if isinstance(m, bytes) else m for m in members)

    async def maintain(self) -> None:
        """Nothing to do: Redis expires finished records by itself."""

    async def counts(self, queues: Sequence[str]) -> list[tuple[int, int, int]]:
        """(scheduled, running, deferred) per queue: of the scheduled, ``deferred`` wait on a
        rate or concurrency limit (queued: counted as pending)."""
        with self.redis.errors("reading queue counts"):
            pipe = self.redis.client.pipeline(transaction=False)
            for q in queues:
                keys = self.keys(q)
                pipe.scard(keys.scheduled)
                pipe.scard(keys.running)
                pipe.scard(keys.deferred)
            replies = await pipe.execute()
        return [
            (int(replies[i]), int(replies[i + 1]), int(replies[i + 2]))
            for i in range(0, len(replies), 3)
        ]


def _stored(reply: list[Any]) -> tuple[str, bool]:
    """ENQUEUE's reply for one job: its id, and whether its message is to be published."""
    job_id, publish = reply
    return job_id.decode(), bool(publish)


_RETRY = Outcome.RETRY  # looked up once: a property call on Python 3.11, on a per-job path


def settle_args(s: Settlement) -> list[Any]:
    """One delivery's arguments to SETTLE: outcome, id, result, eta, error, task, next
    attempt, and the record's TTL in ms ('' for the store's)."""
    result, eta, error, ttl = settle_values(s)
    outcome = s.outcome
    attempt = s.attempt + 1 if outcome is _RETRY else ""
    return [outcome._value_, s.delivery.id, result, eta, error, s.task, attempt, ttl]
