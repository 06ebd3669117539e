"""Per-minute counts of finished attempts (:mod:`asyncq.throughput`) in Redis: one small
hash per queue and minute (``<base>:minute:<start>``, fields ``s`` and ``f``), in the queue's
hash tag, added to by a script call that rides in the settle's own round trip, and expiring
with the counts' retention."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from asyncq.records import MinuteCounts
from asyncq.settlement import Settlement
from asyncq.throughput import KEPT, MINUTE, count_batch, minute_of

from .client import RedisStore
from .keys import QueueKeys
from .scripting import Call

__all__ = ["SCRIPTS", "count_calls", "kept_minute_keys", "read_minute_counts"]

_COUNT = """
-- KEYS: the minute's hash. ARGV: succeeded, failed, seconds to keep it.
if ARGV[1] ~= '0' then redis.call('HINCRBY', KEYS[1], 's', ARGV[1]) end
if ARGV[2] ~= '0' then redis.call('HINCRBY', KEYS[1], 'f', ARGV[2]) end
redis.call('EXPIRE', KEYS[1], ARGV[3])
"""

SCRIPTS = {"COUNT_MINUTE": _COUNT}


def count_calls(
    settlements: Sequence[Settlement], keys: Callable[[str], QueueKeys], now: float
) -> list[Call]:
    """The script calls that count ``settlements``, to send with the settle's."""
    minute, keep = minute_of(now), str(KEPT + MINUTE)
    return [
        ("COUNT_MINUTE", [keys(queue).minute(minute)], [str(ok), str(bad), keep])
        for queue, (ok, bad) in count_batch(settlements).items()
    ]


def kept_minute_keys(keys: QueueKeys) -> list[str]:
    """The keys every minute still kept may have: what removing the queue deletes."""
    now = time.time()
    return [keys.minute(m) for m in range(minute_of(now - KEPT), minute_of(now) + 1, MINUTE)]


async def read_minute_counts(
    redis: RedisStore, keys: Callable[[str], QueueKeys], queues: Sequence[str], minutes: int
) -> list[MinuteCounts]:
    now = time.time()
    first = max(minute_of(now) - (minutes - 1) * MINUTE, minute_of(now - KEPT))
    wanted = [(q, m) for m in range(first, minute_of(now) + 1, MINUTE) for q in queues]
    with redis.errors("reading the minute counts"):
        async with redis.client.pipeline(transaction=False) as pipe:
            for queue, minute in wanted:
                pipe.hmget(keys(queue).minute(minute), "s", "f")
            replies = await pipe.execute()
    return [
        MinuteCounts(queue, minute, int(ok or 0), int(bad or 0))
        for (queue, minute), (ok, bad) in zip(wanted, replies, strict=True)
        if ok is not None or bad is not None
    ]
