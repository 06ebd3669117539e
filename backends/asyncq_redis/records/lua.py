"""The Lua every script on job records is built from: each fragment defines one local
function, once, and :func:`define` puts the fragments a script uses (and those they call)
ahead of its body.

A job record is a hash under ``<base>:job:<id>`` (``base`` is the queue's tagged prefix,
:attr:`QueueKeys.base`): ``status``, ``task``, ``attempt``, ``eta``, ``result``, ``error``
(JSON), ``key`` (its idempotency key), ``cancel`` (a cancellation asked for while a worker
runs it) and ``updated``; a backend may keep fields of its own there (the Redis backend's
``entry`` and ``body``). An idempotency key is a string ``<base>:key:<key>`` holding its
job's id. A job's end is published on ``<base>:done:<id>``. The scripts build these keys
from ``base``, so they sit in the queue's cluster slot. A script runs atomically: no other
client sees a half-done step, which is what the invariants below rest on.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "CANCEL_RECORD",
    "CLAIM",
    "CLAIM_KEY",
    "FINISH",
    "IS_FINISHED",
    "RELEASE_KEY",
    "Fragment",
    "define",
]


@dataclass(frozen=True, slots=True, eq=False)
class Fragment:
    """Lua source defining one local function, and the fragments whose functions it calls."""

    source: str
    needs: tuple[Fragment, ...] = ()


def define(*fragments: Fragment) -> str:
    """The source defining ``fragments``' functions and those they call, each once and
    before its first caller: what a script's body is appended to."""
    done: list[Fragment] = []

    def add(fragment: Fragment) -> None:
        if fragment not in done:
            for needed in fragment.needs:
                add(needed)
            done.append(fragment)

    for fragment in fragments:
        add(fragment)
    return "".join(f.source for f in done)


IS_FINISHED = Fragment("""
-- Whether a job in this status has ended: it will not run again, and only a replay (a new
-- job under the old id) brings it back.
local function finished(status)
    return status == 'succeeded' or status == 'dead' or status == 'cancelled'
end
""")

CLAIM_KEY = Fragment("""
-- Claim idempotency key `key` for job `id`: the id of the job that holds it already, or
-- false once it is this job's.
local function claim_key(base, key, id)
    local kk = base .. ':key:' .. key
    local holder = redis.call('GET', kk)
    if not holder then
        redis.call('SET', kk, id)
    end
    return holder
end
""")

RELEASE_KEY = Fragment("""
-- Free idempotency key `key` if job `id` holds it (a key taken over by a later job stays).
local function release_key(base, key, id)
    local kk = base .. ':key:' .. key
    if redis.call('GET', kk) == id then
        redis.call('DEL', kk)
    end
end
""")

FINISH = Fragment(
    """
-- Finish a job: store its end, free its key (a dead or cancelled job frees it, a success
-- holds it for the result TTL) and tell whoever waits on it. What only a waiting job has
-- goes: its eta, a cancellation request, and the Redis backend's entry and body.
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
        if status == 'succeeded' then
            redis.call('PEXPIRE', base .. ':key:' .. key, ttl)
        else
            release_key(base, key, id)
        end
    end
    redis.call('PUBLISH', base .. ':done:' .. id, status)
end
""",
    (RELEASE_KEY,),
)

CLAIM = Fragment(
    """
-- The first step of storing job `id` (record `jk`) with idempotency key `key` ('' = none).
-- The key is claimed in the same step as the job is stored, so producers racing with one
-- key create exactly one job. Returns what the producer gets and what is left to do:
-- 'held' and the holder's id, when a job holds the key already (this one too, if its
-- enqueue is sent again); 'known' and `id`, when the record exists (the same enqueue sent
-- again, say a pipeline re-sent after a dropped connection), unless it is a dead or
-- cancelled job and `replay` stores it anew; else 'new' and `id`: the record is empty but
-- for its key, for the caller to fill in (nothing of a replayed job's old record carries
-- over).
local function claim(base, jk, id, key, replay)
    if key ~= '' then
        local holder = claim_key(base, key, id)
        if holder then
            return 'held', holder
        end
    end
    local status = redis.call('HGET', jk, 'status')
    if status then
        if not (replay and status ~= 'succeeded' and finished(status)) then
            return 'known', id
        end
        redis.call('DEL', jk)
    end
    if key ~= '' then
        redis.call('HSET', jk, 'key', key)
    end
    return 'new', id
end
""",
    (CLAIM_KEY, IS_FINISHED),
)

CANCEL_RECORD = Fragment(
    """
-- Cancel job `id` in `status`, as its caller reads it (a job a worker holds is 'running').
-- Returns 'finished' when it had already ended or is unknown (nothing changes); 'running'
-- when its worker is told to cancel it (the worker cancels the handler and settles it; the
-- flag covers a worker that is gone); 'cancelled' once it is finished as cancelled, for the
-- caller to take it out of its queue's structures.
local function cancel_record(base, jk, id, status, now, ttl, channel)
    if not status or finished(status) then
        return 'finished'
    end
    if status == 'running' then
        redis.call('HSET', jk, 'cancel', 1)
        redis.call('PUBLISH', channel, id)
        return 'running'
    end
    finish(base, jk, id, 'cancelled', ttl, now)
    return 'cancelled'
end
""",
    (FINISH, IS_FINISHED),
)
