"""The JobStore of job records kept in Redis, as far as every such store is the same:
each queue's keys, waiting for a job to finish, the cancellation channel and its watch, and
the workers' heartbeats. How a record is read and cancelled depends on which broker holds
the job (whether it is running is the broker's to say), so a subclass implements
``job_info`` and ``cancel``: the Redis backend's reads its streams, the AMQP backend's
record store its own sets.

Heartbeats: one key per worker, holding its info as JSON. Each heartbeat sets the key to
expire ``ttl + GONE_RETENTION`` from now. While more than ``GONE_RETENTION`` of that is
left, the worker is live; after that it is gone (it missed its heartbeats, and did not
deregister as a stopping worker does), and it stays listed as gone until the key expires.
Liveness is read from the key's own TTL, on Redis's clock, so clocks that disagree between
the workers and whoever lists them do not matter.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from redis import exceptions as rx

from asyncq.records import (
    GONE_RETENTION,
    ConcurrencyRequest,
    JobInfo,
    Permit,
    Progress,
    RateRequest,
    ScheduleState,
    WorkerInfo,
)
from asyncq.store import JobStore

from ..notifications import listen
from . import codec, permits
from .client import RedisStore
from .keys import QueueKeys

__all__ = ["CLIENT_NAME", "RedisJobStore"]

CLIENT_NAME = "redis_client"
"""The key in a heartbeat's ``extra`` naming the connections of the worker's process."""

_RETENTION_MS = int(GONE_RETENTION * 1000)


_CLAIM_SLOT = """
-- KEYS: the slot's claim, the schedule's last slot. ARGV: slot (ms), ttl (ms), job id.
-- One step: only the caller that creates the claim wins, and moves the last slot forward.
-- The claim holds the slot's job id, for whoever asks how the last slot went.
if not redis.call('SET', KEYS[1], ARGV[3], 'NX', 'PX', ARGV[2]) then
    return 0
end
local last = redis.call('GET', KEYS[2])
if not last or tonumber(ARGV[1]) > tonumber(last) then
    redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
else
    redis.call('PEXPIRE', KEYS[2], ARGV[2])
end
return 1
"""

_SCHEDULE_STATE = """
-- KEYS: the schedule's last slot, its paused flag. ARGV: the claim keys' prefix.
-- Returns {last slot (ms) or false, that slot's job id or false, paused (0/1)}.
local last = redis.call('GET', KEYS[1])
local job = false
if last then
    job = redis.call('GET', ARGV[1] .. last)
end
return {last, job, redis.call('EXISTS', KEYS[2])}
"""

_SET_PROGRESS = """
-- KEYS: the job's record. ARGV: progress (JSON). A record that expired is not brought back.
if redis.call('EXISTS', KEYS[1]) == 1 then
    redis.call('HSET', KEYS[1], 'progress', ARGV[1])
end
return 1
"""


class RedisJobStore(JobStore):
    """Job records, cancellations and heartbeats in the Redis of ``redis``, under ``prefix``;
    finished records are kept ``ttl_ms`` unless their task says otherwise."""

    def __init__(self, redis: RedisStore, *, prefix: str, ttl_ms: int) -> None:
        self.redis = redis
        self.ttl_ms = ttl_ms
        self._prefix = prefix
        self._queue_keys: dict[str, QueueKeys] = {}
        self._workers = [f"{prefix}:{{workers}}", f"{prefix}:{{workers}}:forget"]

    def _schedule_keys(self, schedule: str) -> str:
        # One hash tag per schedule: its claims and its last slot share a Cluster slot.
        return f"{self._prefix}:{{schedule:{schedule}}}"

    async def take_rate_permits(self, requests: Sequence[RateRequest]) -> list[float]:
        return await permits.take_rate_permits(self.redis, self._prefix, requests)

    async def take_concurrency_permits(self, requests: Sequence[ConcurrencyRequest]) -> list[float]:
        return await permits.take_concurrency_permits(self.redis, self._prefix, requests)

    async def take_order_tickets(self, keys: Sequence[str]) -> list[int]:
        return await permits.take_order_tickets(self.redis, self._prefix, keys)

    async def void_order_tickets(self, tickets: Sequence[tuple[str, int]]) -> None:
        await permits.void_order_tickets(self.redis, self._prefix, tickets)

    async def renew_concurrency_permits(self, held: Sequence[Permit], lease: float) -> None:
        await permits.renew_concurrency_permits(self.redis, self._prefix, held, lease)

    async def release_concurrency_permits(
        self, held: Sequence[Permit], held_for: Sequence[float]
    ) -> None:
        await permits.release_concurrency_permits(self.redis, self._prefix, held, held_for)

    async def set_progress(self, job_id: str, queue: str, progress: Progress) -> None:
        record = self.keys(queue).job(job_id)
        with self.redis.errors("storing a job's progress"):
            await self.redis.client.eval(_SET_PROGRESS, 1, record, codec.progress_to_json(progress))

    async def claim_slot(self, schedule: str, slot: datetime, ttl: float, job_id: str = "") -> bool:
        base = self._schedule_keys(schedule)
        slot_ms = round(slot.timestamp() * 1000)
        keys = [f"{base}:slot:{slot_ms}", f"{base}:last"]
        with self.redis.errors("claiming a periodic slot"):
            won = await self.redis.client.eval(
                _CLAIM_SLOT, 2, *keys, slot_ms, max(int(ttl * 1000), 1), job_id or "1"
            )
        return bool(won)

    async def schedule_state(self, schedule: str) -> ScheduleState:
        base = self._schedule_keys(schedule)
        with self.redis.errors("reading a schedule's last slot"):
            last, job, paused = await self.redis.client.eval(
                _SCHEDULE_STATE, 2, f"{base}:last", f"{base}:paused", f"{base}:slot:"
            )
        # A claim made before claims held their job ids holds "1".
        job_id = job.decode() if job and job != b"1" else None
        slot = None if not last else datetime.fromtimestamp(int(last) / 1000, UTC)
        return ScheduleState(slot, job_id, bool(paused))

    async def pause_schedule(self, schedule: str, paused: bool) -> None:
        key = f"{self._schedule_keys(schedule)}:paused"
        with self.redis.errors("pausing a schedule" if paused else "resuming a schedule"):
            if paused:
                await self.redis.client.set(key, "1")
            else:
                await self.redis.client.delete(key)

    def keys(self, queue: str) -> QueueKeys:
        keys = self._queue_keys.get(queue)
        if keys is None:
            keys = self._queue_keys[queue] = QueueKeys(self._prefix, queue)
        return keys

    async def wait_finished(self, job_id: str, queue: str, timeout: float | None) -> JobInfo | None:
        channel = self.keys(queue).done_prefix + job_id
        return await self.redis.wait_finished(
            channel, lambda: self.job_info(job_id, queue), timeout
        )

    async def watch_cancellations(self, on_cancel: Callable[[str], None]) -> None:
        await listen(lambda: self.redis.listener, self.redis.cancel_channel, on_cancel)

    # -- heartbeats ------------------------------------------------------------------------
    async def heartbeat(self, worker: WorkerInfo, ttl: float) -> None:
        worker = replace(worker, extra={**worker.extra, CLIENT_NAME: self.redis.client_name})
        beat = [worker.id, codec.worker_to_json(worker), max(int(ttl * 1000), 1) + _RETENTION_MS]
        with self.redis.errors("sending a heartbeat"):
            await self.redis.run([("WORKER_BEAT", self._workers, beat)])

    async def deregister(self, worker_id: str) -> None:
        with self.redis.errors("deregistering a worker"):
            await self.redis.run([("WORKER_GONE", self._workers, [worker_id])])

    async def workers(self, *, include_gone: bool = False) -> list[WorkerInfo]:
        """As the heartbeats say, except that a live one whose process holds no connection
        to Redis any more (killed, its host lost) is gone at once, not after three beats."""
        with self.redis.errors("listing workers"):
            listed = await self._heartbeats()
            connected = await self._connected_names() if any(not w.gone for w in listed) else None
        found = []
        for worker in listed:
            name = worker.extra.get(CLIENT_NAME)
            if not worker.gone and connected is not None and name and name not in connected:
                worker = replace(worker, gone=True)
            if include_gone or not worker.gone:
                found.append(worker)
        return found

    async def _heartbeats(self) -> list[WorkerInfo]:
        """Every worker with a heartbeat, live or gone, oldest first."""
        ((now, listed),) = await self.redis.run([("WORKER_LIST", self._workers, [])])
        found = []
        for _id, forget_at, raw in listed:
            worker = codec.worker_from_json(raw)
            if int(forget_at) - int(now) <= _RETENTION_MS:  # past its heartbeat's deadline
                worker = replace(worker, gone=True)
            found.append(worker)
        return sorted(found, key=lambda w: w.started_at)

    async def _connected_names(self) -> set[str] | None:
        """The names of the server's open connections; None where CLIENT LIST is refused
        (an ACL, a managed service), and then the heartbeats alone decide."""
        # A live worker writes its heartbeats to the server of the heartbeats' key, so it
        # holds a connection there (on a cluster, the master of that key's slot).
        node = self.redis.node_of(self._workers[0])
        try:
            clients: Any = await node.client_list()
        except rx.ResponseError:
            return None
        finally:
            if node is not self.redis.client:
                await node.aclose(close_connection_pool=True)
        return {str(c.get("name", "")) for c in clients}
