"""Lua scripts run by SHA: loaded once per connection, a batch of calls in one round trip,
and loaded again when Redis has lost its script cache (a restart), re-running only the
calls it refused. A batch of jobs is split into calls per queue (a script works on one
queue's keys) and per SCRIPT_CHUNK jobs. Used by the Redis backend and the AMQP backend's
record store."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from redis import exceptions as rx

from asyncq.delivery import Envelope
from asyncq.errors import BrokerError
from asyncq.settlement import Settlement

from ..wire import Calls
from .keys import QueueKeys

__all__ = ["SCRIPT_CHUNK", "Call", "Scripts", "enqueue_chunks", "settle_chunks"]

SCRIPT_CHUNK = 200
"""Jobs per script call: a batch is one round trip, and each script's run stays short
(about 1 ms), so none stalls other clients for long."""

Call = tuple[str, list[Any], list[Any]]
"""One script call: the script's name, its KEYS, its ARGV."""


def enqueue_chunks(
    envelopes: Sequence[Envelope], keys: Callable[[str], QueueKeys], *, by_priority: bool = False
) -> tuple[list[tuple[QueueKeys, Sequence[Envelope]]], list[int] | None]:
    """The envelopes per queue (and, ``by_priority``, per priority) and SCRIPT_CHUNK at a
    time, with their queue's keys: one script call each. Also where each envelope stands in
    ``envelopes``, in the order of the chunks; None when that is their own order (they all
    go into one group)."""
    if not envelopes:
        return [], None
    first = envelopes[0]
    queue, priority = first.queue, first.priority if by_priority else 0
    for env in envelopes:  # most often one group (one job, or one enqueue_many): no grouping
        if env.queue != queue or (by_priority and env.priority != priority):
            break
    else:
        queue_keys = keys(queue)
        return [
            (queue_keys, envelopes[start : start + SCRIPT_CHUNK])
            for start in range(0, len(envelopes), SCRIPT_CHUNK)
        ], None
    groups: dict[tuple[str, int], list[Envelope]] = defaultdict(list)
    for env in envelopes:
        groups[env.queue, env.priority if by_priority else 0].append(env)
    chunks: list[tuple[QueueKeys, Sequence[Envelope]]] = [
        (keys(q), jobs[start : start + SCRIPT_CHUNK])
        for (q, _), jobs in groups.items()
        for start in range(0, len(jobs), SCRIPT_CHUNK)
    ]
    places: dict[tuple[str, int], list[int]] = defaultdict(list)
    for i, env in enumerate(envelopes):
        places[env.queue, env.priority if by_priority else 0].append(i)
    return chunks, [i for group in groups for i in places[group]]


def settle_chunks(
    settlements: Sequence[Settlement], keys: Callable[[str], QueueKeys]
) -> list[tuple[QueueKeys, list[Settlement]]]:
    """The settlements per queue and SCRIPT_CHUNK at a time, with their queue's keys: one
    script call each."""
    by_queue: dict[str, list[Settlement]] = defaultdict(list)
    for s in settlements:
        by_queue[s.delivery.queue].append(s)
    return [
        (keys(q), items[start : start + SCRIPT_CHUNK])
        for q, items in by_queue.items()
        for start in range(0, len(items), SCRIPT_CHUNK)
    ]


class Scripts:
    def __init__(self, sources: Mapping[str, str]) -> None:
        self._sources = dict(sources)
        self._shas: dict[str, str] = {}

    async def load(self, wire: Calls) -> None:
        replies = await wire.execute([("SCRIPT", "LOAD", src) for src in self._sources.values()])
        for name, reply in zip(self._sources, replies, strict=True):
            if isinstance(reply, BaseException):
                raise reply
            self._shas[name] = reply.decode()

    async def run(
        self,
        wire: Calls,
        calls: Sequence[Call],
        *,
        register: tuple[str, Sequence[str]] | None = None,
        wait: tuple[int, int] | None = None,
    ) -> list[Any]:
        """The calls' replies, in order. ``register`` (a set's key and members) is added to
        that set in the same round trip: how new queues join a registry of queues.
        ``wait`` (replicas, milliseconds): the round trip ends with ``WAIT`` (see wire.py)."""
        shas = self._shas
        if len(calls) == 1 and not register and wait is None:  # no list of replies to sort out
            name, keys, args = calls[0]
            try:
                return [await wire.call("EVALSHA", shas[name], len(keys), *keys, *args)]
            except rx.NoScriptError:
                await self.load(wire)
                return [await wire.call("EVALSHA", shas[name], len(keys), *keys, *args)]
        results: list[Any] = [None] * len(calls)
        todo = list(range(len(calls)))
        for _ in range(2):
            commands: list[tuple[Any, ...]] = []
            if register:
                commands.append(("SADD", register[0], *register[1]))
            for i in todo:
                name, keys, args = calls[i]
                commands.append(("EVALSHA", shas[name], len(keys), *keys, *args))
            replies = await wire.execute(commands, wait=wait)
            if register:
                if isinstance(replies[0], BaseException):
                    raise replies[0]
                replies, register = replies[1:], None
            missing = []
            for i, reply in zip(todo, replies, strict=True):
                if isinstance(reply, rx.NoScriptError):
                    missing.append(i)
                elif isinstance(reply, BaseException):
                    raise reply
                else:
                    results[i] = reply
            if not missing:
                return results
            await self.load(wire)
            todo = missing
        raise BrokerError("Redis keeps refusing asyncq's scripts (NOSCRIPT)")
