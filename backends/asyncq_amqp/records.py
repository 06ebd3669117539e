"""The AMQP backend's job records, kept in Redis.

RabbitMQ moves messages; it cannot look one up by id, hold a result, or say whether an
idempotency key is taken. Those live here, one hash per job under
``<prefix>:amqp:{queue}:job:<id>`` with the same fields as on the Redis backend (so its
codec reads them), plus ``cancel`` while a cancellation waits for the running worker.
Per queue, the sets ``:running`` and ``:scheduled`` count what RabbitMQ cannot report
(unacknowledged and delayed jobs). Every change is one Lua script, atomic on its queue's
keys, and a batch is one pipelined round trip.

The records also make AMQP's redeliveries safe: a message whose job already ended, or
that carries an older attempt than the record (a copy left behind by a connection lost
between a retry's publish and its ack), is acknowledged and skipped instead of run.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import redis.asyncio as aioredis
from asyncq_redis import codec
from asyncq_redis.scripts import FINISH
from asyncq_redis.store import RedisStore

from asyncq.backend import Envelope, Outcome, Settlement
from asyncq.records import JobInfo, WorkerInfo

__all__ = ["Admission", "RecordStore"]

ENQUEUE = """
-- KEYS: scheduled. ARGV: base, now, then per job: id, task, eta ('' = now), key ('' = none),
-- replay (0/1). Returns per job {id, publish}: a key already held returns its holder's id
-- and 0; a job stored anew returns 1. A record that exists already is left as it is (the
-- same enqueue sent twice, or a worker that saw the message first and may even have
-- finished it), unless the job is a replay of a dead or cancelled one.
local scheduled = KEYS[1]
local base, now = ARGV[1], ARGV[2]
local out = {}
for i = 3, #ARGV, 5 do
    local id, task, eta, key, replay = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
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
        table.insert(out, {existing, 0})
    elseif status and (replay == '0' or (status ~= 'dead' and status ~= 'cancelled')) then
        redis.call('HSETNX', jk, 'task', task)
        table.insert(out, {id, 0})
    else
        if status then
            redis.call('DEL', jk)  -- a replay: nothing of the dead job's record carries over
        end
        if eta ~= '' and tonumber(eta) > tonumber(now) then
            redis.call('HSET', jk, 'status', 'scheduled', 'task', task, 'attempt', 1, 'eta', eta,
                'updated', now)
            redis.call('SADD', scheduled, id)
        else
            redis.call('HSET', jk, 'status', 'queued', 'task', task, 'attempt', 1, 'updated', now)
        end
        if key ~= '' then
            redis.call('HSET', jk, 'key', key)
        end
        table.insert(out, {id, 1})
    end
end
return out
"""

FORGET = """
-- KEYS: scheduled. ARGV: base, ids... Undo ENQUEUE for jobs the broker refused: their
-- records and key claims go, as if they had never been enqueued.
local base = ARGV[1]
for i = 2, #ARGV do
    local id = ARGV[i]
    local jk = base .. ':job:' .. id
    local key = redis.call('HGET', jk, 'key')
    if key and redis.call('GET', base .. ':key:' .. key) == id then
        redis.call('DEL', base .. ':key:' .. key)
    end
    redis.call('DEL', jk)
    redis.call('SREM', KEYS[1], id)
end
return 1
"""

START = (
    FINISH
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
    if status == 'succeeded' or status == 'dead' or status == 'cancelled' then
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
        redis.call('HDEL', jk, 'eta')
        redis.call('SADD', running, id)
        redis.call('SREM', scheduled, id)
    end
    table.insert(out, verdict)
end
return out
"""
)

SETTLE = (
    FINISH
    + """
-- KEYS: scheduled, running. ARGV: base, now, ttl_ms, then per delivery: outcome, id,
-- result, eta, error, task, next attempt, ttl_ms of its task (empty strings where unused;
-- an empty ttl is the store's).
local scheduled, running = KEYS[1], KEYS[2]
local base, now, default_ttl = ARGV[1], ARGV[2], ARGV[3]
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
        if tonumber(eta) > tonumber(now) then
            redis.call('HSET', jk, 'status', 'failed', 'eta', eta)
            redis.call('SADD', scheduled, id)
        else
            redis.call('HSET', jk, 'status', 'queued')
        end
    elseif outcome == 'dead' then
        redis.call('HSET', jk, 'error', err)
        finish(base, jk, id, 'dead', ttl, now)
    elseif outcome == 'cancelled' then
        finish(base, jk, id, 'cancelled', ttl, now)
    elseif outcome == 'release' then
        if redis.call('HGET', jk, 'status') == 'running' then
            redis.call('HSET', jk, 'status', 'queued', 'updated', now)
        end
    end
end
return 1
"""
)

CANCEL = (
    FINISH
    + """
-- KEYS: scheduled. ARGV: base, id, now, ttl_ms, cancel channel.
-- Returns 1 if the job will not run (again), 0 if it had already finished or is unknown.
-- A queued or delayed job's message stays in RabbitMQ; the worker that receives it finds
-- the record cancelled and drops it.
local base, id, now, ttl, channel = unpack(ARGV)
local jk = base .. ':job:' .. id
local status = redis.call('HGET', jk, 'status')
if not status or status == 'succeeded' or status == 'dead' or status == 'cancelled' then
    return 0
end
if status == 'running' then
    redis.call('HSET', jk, 'cancel', 1)
    redis.call('PUBLISH', channel, id)
    return 1
end
redis.call('SREM', KEYS[1], id)
finish(base, jk, id, 'cancelled', ttl, now)
return 1
"""
)

PURGE = (
    FINISH
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
    if status and status ~= 'succeeded' and status ~= 'dead' and status ~= 'cancelled' then
        finish(base, jk, id, 'cancelled', ttl, now)
    end
    redis.call('SREM', running, id)
    redis.call('SREM', scheduled, id)
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
    "START": START,
    "SETTLE": SETTLE,
    "CANCEL": CANCEL,
    "PURGE": PURGE,
}
_CHUNK = 200  # jobs per script call, so no single call stalls Redis for long


class _QueueKeys:
    __slots__ = ("base", "done_prefix", "running", "scheduled")

    def __init__(self, prefix: str, queue: str) -> None:
        self.base = f"{prefix}:{{{queue}}}"
        self.scheduled = f"{self.base}:scheduled"
        self.running = f"{self.base}:running"
        self.done_prefix = f"{self.base}:done:"

    def job(self, job_id: str) -> str:
        return f"{self.base}:job:{job_id}"


class Admission:
    """What START decided for one delivery."""

    SKIP = 0
    RUN = 1
    RUN_REDELIVERED = 2


class RecordStore:
    """Job records, queue counters, cancellation requests and heartbeats in Redis."""

    def __init__(self, url: str, *, prefix: str, result_ttl: float) -> None:
        self._prefix = prefix
        self._ttl_ms = max(int(result_ttl * 1000), 1)
        self._store = RedisStore(
            url, prefix=prefix, scripts=_SCRIPTS, max_connections=64, owner="the AMQP backend"
        )
        self.errors = self._store.errors
        self._run = self._store.run
        self._keys: dict[str, _QueueKeys] = {}
        self._known_queues: set[str] = set()

    # -- connection ------------------------------------------------------------------------
    async def connect(self) -> None:
        await self._store.connect("connecting to the record store")

    async def close(self) -> None:
        await self._store.close()

    @property
    def client(self) -> aioredis.Redis:
        return self._store.client

    def keys(self, queue: str) -> _QueueKeys:
        keys = self._keys.get(queue)
        if keys is None:
            keys = self._keys[queue] = _QueueKeys(self._prefix, queue)
        return keys

    # -- the life of a job -----------------------------------------------------------------
    async def enqueue(self, envelopes: Sequence[Envelope]) -> list[tuple[str, bool]]:
        """Store the jobs' records; per job, its id (the key holder's, if the key was taken)
        and whether its message is to be published."""
        now = repr(time.time())
        by_queue: dict[str, list[int]] = defaultdict(list)
        for i, env in enumerate(envelopes):
            by_queue[env.queue].append(i)
        calls, order = [], []
        for q, indexes in by_queue.items():
            keys = self.keys(q)
            for start in range(0, len(indexes), _CHUNK):
                chunk = indexes[start : start + _CHUNK]
                args: list[Any] = [keys.base, now]
                for i in chunk:
                    env = envelopes[i]
                    eta = "" if env.eta is None else repr(env.eta)
                    args += [env.id, env.task, eta, env.key or "", 1 if env.replay else 0]
                calls.append(("ENQUEUE", [keys.scheduled], args))
                order.append(chunk)
        new_queues = [q for q in by_queue if q not in self._known_queues]
        with self.errors("storing job records"):
            replies = await self._run(calls, new_queues=new_queues)
        self._known_queues.update(new_queues)
        out: list[tuple[str, bool]] = [("", False)] * len(envelopes)
        for chunk, reply in zip(order, replies, strict=True):
            for i, (job_id, publish) in zip(chunk, reply, strict=True):
                out[i] = (job_id.decode(), bool(publish))
        return out

    async def forget(self, queue: str, ids: Sequence[str]) -> None:
        keys = self.keys(queue)
        with self.errors("undoing refused jobs"):
            await self._run([("FORGET", [keys.scheduled], [keys.base, *ids])])

    async def register(self, queues: Sequence[str]) -> None:
        new = [q for q in queues if q not in self._known_queues]
        if new:
            with self.errors("registering queues"):
                await self.client.sadd(self._store.queues_key, *new)
            self._known_queues.update(new)

    async def queues(self) -> list[str]:
        with self.errors("listing queues"):
            members: Any = await self.client.smembers(self._store.queues_key)
        return sorted(m.decode() for m in members)

    async def start(
        self, batches: Sequence[tuple[str, Sequence[tuple[str, int, bool]]]]
    ) -> list[int]:
        """Admit deliveries, given per queue as (id, attempt, redelivered); returns an
        :class:`Admission` per delivery, in order."""
        now, ttl = repr(time.time()), self._ttl_ms
        calls = []
        for q, items in batches:
            keys = self.keys(q)
            for start in range(0, len(items), _CHUNK):
                args: list[Any] = [keys.base, now, ttl]
                for job_id, attempt, redelivered in items[start : start + _CHUNK]:
                    args += [job_id, attempt, 1 if redelivered else 0]
                calls.append(("START", [keys.scheduled, keys.running], args))
        with self.errors("admitting jobs"):
            replies = await self._run(calls)
        return [int(v) for reply in replies for v in reply]

    async def settle(self, settlements: Sequence[Settlement]) -> None:
        now, ttl = repr(time.time()), self._ttl_ms
        by_queue: dict[str, list[Settlement]] = defaultdict(list)
        for s in settlements:
            by_queue[s.delivery.queue].append(s)
        calls = []
        for q, items in by_queue.items():
            keys = self.keys(q)
            for start in range(0, len(items), _CHUNK):
                args: list[Any] = [keys.base, now, ttl]
                for s in items[start : start + _CHUNK]:
                    args += _settle_args(s)
                calls.append(("SETTLE", [keys.scheduled, keys.running], args))
        with self.errors("recording settled jobs"):
            await self._run(calls)

    async def cancel(self, job_id: str, queue: str) -> bool:
        keys = self.keys(queue)
        args = [keys.base, job_id, repr(time.time()), self._ttl_ms, self._store.cancel_channel]
        with self.errors("cancelling a job"):
            (reply,) = await self._run([("CANCEL", [keys.scheduled], args)])
        return bool(reply)

    async def watch_cancellations(self, on_cancel: Callable[[str], None]) -> None:
        await self._store.watch_cancellations(on_cancel)

    async def purge(self, queue: str, taken: Sequence[str], limit: int) -> int:
        """Cancel the jobs whose messages were ``taken`` off the work queue, and up to
        ``limit`` delayed or retrying ones; how many in all."""
        keys = self.keys(queue)
        args: list[Any] = [keys.base, repr(time.time()), self._ttl_ms, limit, *taken]
        with self.errors("purging a queue"):
            (purged,) = await self._run([("PURGE", [keys.scheduled, keys.running], args)])
        return int(purged)

    async def unregister(self, queue: str) -> None:
        with self.errors("removing a queue"):
            await self.client.srem(self._store.queues_key, queue)
        self._known_queues.discard(queue)

    # -- reading ---------------------------------------------------------------------------
    async def job_info(self, job_id: str, queue: str) -> JobInfo | None:
        with self.errors("reading a job"):
            record: Any = await self.client.hgetall(self.keys(queue).job(job_id))
        return codec.job_info(job_id, queue, [x for pair in record.items() for x in pair])

    async def wait_finished(self, job_id: str, queue: str, timeout: float | None) -> JobInfo | None:
        channel = self.keys(queue).done_prefix + job_id
        return await self._store.wait_finished(
            channel, lambda: self.job_info(job_id, queue), timeout
        )

    async def counts(self, queues: Sequence[str]) -> list[tuple[int, int]]:
        """(scheduled, running) per queue."""
        with self.errors("reading queue counts"):
            pipe = self.client.pipeline(transaction=False)
            for q in queues:
                keys = self.keys(q)
                pipe.scard(keys.scheduled)
                pipe.scard(keys.running)
            replies = await pipe.execute()
        return [(int(replies[i]), int(replies[i + 1])) for i in range(0, len(replies), 2)]

    # -- heartbeats ------------------------------------------------------------------------
    async def heartbeat(self, worker: WorkerInfo, ttl: float) -> None:
        await self._store.heartbeat(worker, ttl)

    async def deregister(self, worker_id: str) -> None:
        await self._store.deregister(worker_id)

    async def workers(self, *, include_gone: bool = False) -> list[WorkerInfo]:
        return await self._store.workers(include_gone=include_gone)


def _settle_args(s: Settlement) -> list[Any]:
    """outcome, id, result, eta, error, task, next attempt, record TTL."""
    error = codec.error_to_json(s.error) if s.error is not None else b""
    eta = repr(s.eta) if s.eta is not None else "0"
    attempt = s.attempt + 1 if s.outcome is Outcome.RETRY else ""
    result = s.result or b""
    return [s.outcome.value, s.delivery.id, result, eta, error, s.task, attempt, codec.ttl_ms(s)]
