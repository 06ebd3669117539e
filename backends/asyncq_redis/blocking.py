"""The worker's blocking XREADGROUP: sent on a connection of the pool, its reply awaited for
the block plus the socket timeout.

Through the client, a read that blocks about as long as the socket timeout or longer fails
with a timeout (redis-py 8 has a socket timeout of 5 s by default, and Redis answers a block
a little after it ends), and redis-py retries it on a new connection, failing again each
time: an idle worker then logged a failed fetch every ~40 s and did nothing else meanwhile.
Here the server answers at the end of the block at the latest, so only a connection that is
really lost runs out the deadline.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import anyio
import redis.asyncio as aioredis
from redis import exceptions as rx

__all__ = ["Entries", "read_group"]

Entries = list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]]
"""Per stream, its new entries: (stream, [(entry id, fields), ...])."""

# redis-py before 5.3 wants a command name for a connection of the pool; later releases
# warn when given one.
_NAMED = (
    inspect.signature(aioredis.ConnectionPool.get_connection).parameters["command_name"].default
    is inspect.Parameter.empty
)


async def read_group(
    client: aioredis.Redis,
    group: str,
    consumer: str,
    streams: Mapping[str, str],
    *,
    count: int,
    block: float,
    grace: float,
) -> Entries:
    """``XREADGROUP GROUP group consumer COUNT count BLOCK block STREAMS ...``, waiting at
    most ``block + grace`` seconds (``grace``: the socket timeout) for the reply."""
    args: list[Any] = ["XREADGROUP", "GROUP", group, consumer, "COUNT", count]
    args += ["BLOCK", max(int(block * 1000), 1), "STREAMS", *streams, *streams.values()]
    pool: Any = client.connection_pool  # redis-py's pool methods are untyped
    for attempt in (1, 2):
        conn: Any = await (pool.get_connection("XREADGROUP") if _NAMED else pool.get_connection())
        sent = clean = False
        try:
            await conn.send_command(*args)
            sent = True
            with anyio.move_on_after(block + grace) as deadline:
                # redis-py's own timeout only as a backstop: it would leave the reply unread.
                reply = await conn.read_response(timeout=block + grace + 60.0)
            if deadline.cancelled_caught:
                raise rx.TimeoutError(
                    f"no reply from Redis {block + grace:.1f} s into a {block:.1f} s block"
                )
            clean = True
        except rx.ResponseError:
            clean = True  # an error reply (NOGROUP) was read whole: the connection is fine
            raise
        except rx.ConnectionError:
            if attempt == 1 and not sent:
                continue  # a pooled connection the server had closed: once more, on a new one
            raise
        finally:
            # A connection with a reply still to come cannot serve another command.
            with anyio.CancelScope(shield=True):
                if not clean:
                    await conn.disconnect()
                await pool.release(conn)
        return _entries(reply)
    raise AssertionError("unreachable")


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
