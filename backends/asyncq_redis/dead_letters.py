"""Reading a queue's dead-letter stream by job id: the newest letter of a job (newest first,
since the letters people look up are mostly recent), and purging (the oldest letter of each
given job, or every letter)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis

from asyncq.records import DeadLetter

from . import listing

__all__ = ["newest_of", "purge"]

_PAGE = 1000


async def newest_of(
    client: aioredis.Redis, dead: str, queue: str, job_id: str
) -> DeadLetter | None:
    end, wanted = "+", job_id.encode()
    while True:
        page: Any = await client.xrevrange(dead, end, "-", count=_PAGE)
        for entry, fields in page:
            if fields.get(b"id") == wanted:
                return listing.dead_letter(queue, entry, fields)
        if len(page) < _PAGE:
            return None
        end = f"({page[-1][0].decode()}"


_COUNT_AND_DELETE = """
local n = redis.call('XLEN', KEYS[1])
redis.call('DEL', KEYS[1])
return n
"""


async def purge(client: aioredis.Redis, dead: str, ids: Sequence[str] | None) -> int:
    if ids is None:
        # One script rather than MULTI: atomic the same, and a cluster's client (redis-py
        # before 6) refuses transactions.
        count: Any = await client.eval(_COUNT_AND_DELETE, 1, dead)
        return int(count)
    wanted, doomed = {i.encode() for i in ids}, []
    start = "-"
    while True:
        page: Any = await client.xrange(dead, start, "+", count=_PAGE)
        for entry, fields in page:
            job_id = fields.get(b"id")
            if job_id in wanted:
                wanted.discard(job_id)  # the oldest entry of each job only
                doomed.append(entry)
        if len(page) < _PAGE:
            break
        start = f"({page[-1][0].decode()}"
    return int(await client.xdel(dead, *doomed)) if doomed else 0
