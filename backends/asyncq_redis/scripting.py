"""Lua scripts run by SHA: loaded once per connection, a batch of calls in one round trip,
and loaded again when Redis has lost its script cache (a restart), re-running only the
calls it refused. Used by the Redis backend and the AMQP backend's record store."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis import exceptions as rx

from asyncq.errors import BrokerError

__all__ = ["Call", "Scripts"]

Call = tuple[str, list[Any], list[Any]]
"""One script call: the script's name, its KEYS, its ARGV."""


class Scripts:
    def __init__(self, sources: Mapping[str, str]) -> None:
        self._sources = dict(sources)
        self._shas: dict[str, str] = {}

    async def load(self, client: aioredis.Redis) -> None:
        pipe = client.pipeline(transaction=False)
        for source in self._sources.values():
            pipe.script_load(source)
        self._shas.update(zip(self._sources, await pipe.execute(), strict=True))

    async def run(
        self,
        client: aioredis.Redis,
        calls: Sequence[Call],
        *,
        register: tuple[str, Sequence[str]] | None = None,
    ) -> list[Any]:
        """The calls' replies, in order. ``register`` (a set's key and members) is added to
        that set in the same round trip: how new queues join a registry of queues."""
        if len(calls) == 1 and not register:  # one call: skip the pipeline's own overhead
            name, keys, args = calls[0]
            try:
                return [await client.evalsha(self._shas[name], len(keys), *keys, *args)]
            except rx.NoScriptError:
                await self.load(client)
                return [await client.evalsha(self._shas[name], len(keys), *keys, *args)]
        results: list[Any] = [None] * len(calls)
        todo = list(range(len(calls)))
        for _ in range(2):
            pipe = client.pipeline(transaction=False)
            if register:
                pipe.sadd(register[0], *register[1])
            for i in todo:
                name, keys, args = calls[i]
                pipe.evalsha(self._shas[name], len(keys), *keys, *args)
            replies = await pipe.execute(raise_on_error=False)
            if register:
                if isinstance(replies[0], Exception):
                    raise replies[0]
                replies, register = replies[1:], None
            missing = []
            for i, reply in zip(todo, replies, strict=True):
                if isinstance(reply, rx.NoScriptError):
                    missing.append(i)
                elif isinstance(reply, Exception):
                    raise reply
                else:
                    results[i] = reply
            if not missing:
                return results
            await self.load(client)
            todo = missing
        raise BrokerError("Redis keeps refusing asyncq's scripts (NOSCRIPT)")
