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

from collections.abc import Mapping
from typing import Any

import anyio
from redis import exceptions as rx

from .wire import Calls

__all__ = ["Entries", "read_group"]

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
