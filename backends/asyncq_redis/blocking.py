"""The worker's blocking XREADGROUP: sent on a connection of its own (a ``Wire`` that
carries nothing else, so no other command waits behind the block), its reply awaited for
the block plus the socket timeout.

Through the client, a read that blocks about as long as the socket timeout or longer fails
with a timeout (redis-py 8 has a socket timeout of 5 s by default, and Redis answers a block
a little after it ends), and redis-py retries it on a new connection, failing again each
time: an idle worker then logged a failed fetch every ~40 s and did nothing else meanwhile.
Here the server answers at the end of the block at the latest, so only a connection that is
really lost runs out the deadline.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import anyio
import redis.asyncio as aioredis
from redis import exceptions as rx
from redis.crc import key_slot

from .connection import open_wire
from .wire import Calls

__all__ = ["Entries", "Readers", "read_group"]

Entries = list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]]
"""Per stream, its new entries: (stream, [(entry id, fields), ...])."""


async def read_group(
    wire: Calls,
    group: str,
    consumer: str,
    streams: Mapping[str, str],
    *,
    count: int,
    block: float,
    grace: float,
) -> Entries:
    """``XREADGROUP GROUP group consumer COUNT count BLOCK block STREAMS ...``, waiting at
    most ``block + grace`` seconds (``grace``: the socket timeout) for the reply, on a
    connection that carries nothing else (``wire``, untimed: the deadline is this one)."""
    args: list[Any] = ["XREADGROUP", "GROUP", group, consumer, "COUNT", count]
    args += ["BLOCK", max(int(block * 1000), 1), "STREAMS", *streams, *streams.values()]
    try:
        with anyio.move_on_after(block + grace) as deadline:
            reply = await wire.call(*args)
    except rx.ResponseError:
        raise  # an error reply (NOGROUP) was read whole: the connection is fine
    except BaseException as exc:
        # Cancelled (a worker stopping) or failed: the reply may still come, and would hold
        # up the next read on this connection.
        wire.drop(rx.ConnectionError(f"read abandoned: {exc!r}"))
        raise
    if deadline.cancelled_caught:
        error = rx.TimeoutError(
            f"no reply from Redis {block + grace:.1f} s into a {block:.1f} s block"
        )
        wire.drop(error)
        raise error
    return _entries(reply)


class Readers:
    """The blocking reads' connections: one on a single server; on a cluster one per slot
    read, since XREADGROUP's streams must share a slot."""

    def __init__(self, *, cluster: bool) -> None:
        self._cluster = cluster
        self._wires: dict[int, Calls] = {}

    async def read(
        self,
        client: aioredis.Redis,
        group: str,
        consumer: str,
        streams: Sequence[str],
        *,
        count: int,
        block: float,
        grace: float,
    ) -> Entries:
        """``read_group`` on ``streams``. On a cluster, one read per slot (a queue's streams
        share one), all at once: the first to bring entries ends the others, whose entries,
        if one came just then, stay pending to this worker until the visibility timeout
        hands them on (late, never lost)."""
        by_slot: dict[int, dict[str, str]] = defaultdict(dict)
        for stream in streams:
            by_slot[key_slot(stream.encode()) if self._cluster else 0][stream] = ">"

        async def one_slot(slot: int, ids: dict[str, str]) -> Entries:
            wire = self._wires.get(slot)
            if wire is None:
                wire = self._wires[slot] = open_wire(client, timed=False)
            return await read_group(
                wire, group, consumer, ids, count=count, block=block, grace=grace
            )

        if len(by_slot) == 1:
            ((slot, ids),) = by_slot.items()
            return await one_slot(slot, ids)
        first: Entries = []
        async with anyio.create_task_group() as tg:

            async def race(slot: int, ids: dict[str, str]) -> None:
                nonlocal first
                entries = await one_slot(slot, ids)
                if entries and not first:
                    first = entries
                    tg.cancel_scope.cancel()

            for slot, ids in by_slot.items():
                tg.start_soon(race, slot, ids)
        return first

    async def close(self) -> None:
        wires, self._wires = self._wires, {}
        for wire in wires.values():
            await wire.close()


def _entries(reply: Any) -> Entries:
    if not reply:
        return []
    # RESP2 answers a list of [stream, entries] pairs, RESP3 a map.
    pairs = reply.items() if isinstance(reply, dict) else reply
    return [
        (stream, [(entry, _fields(fields)) for entry, fields in entries])
        for stream, entries in pairs
    ]


def _fields(flat: Any) -> dict[bytes, bytes]:
    if not flat:
        return {}
    if isinstance(flat, dict):
        return flat
    return dict(zip(flat[::2], flat[1::2], strict=True))
