"""Dead-letter retention on Redis: a queue's dead letters are one stream, ``<queue>:dead``,
whose entry ids are the server's clock in ms when each job died. ``dead_ttl`` is one
``XTRIM MINID`` at the server's now minus the TTL, and ``dead_max`` one ``XTRIM MAXLEN``,
both exact (no ``~``), in one script per queue: atomic, so workers trimming at once each
remove what is past the bounds once, and the counts they report add up to what went."""

from __future__ import annotations

from collections.abc import Sequence

from asyncq.records import TrimmedDeadLetters

from .records import Call, QueueKeys

__all__ = ["TRIM_DEAD", "trim_calls", "trimmed"]

TRIM_DEAD = """
-- KEYS: dead. ARGV: ttl_ms ('' = none), max ('' = none).
-- Returns {removed as older than ttl_ms, removed as beyond max}.
local dead, ttl, max = KEYS[1], ARGV[1], ARGV[2]
local expired, beyond = 0, 0
if redis.call('EXISTS', dead) == 0 then return {0, 0} end
if ttl ~= '' then
    local now = redis.call('TIME')
    local cutoff = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) - tonumber(ttl)
    if cutoff > 0 then
        expired = redis.call('XTRIM', dead, 'MINID', string.format('%d', cutoff))
    end
end
if max ~= '' then
    beyond = redis.call('XTRIM', dead, 'MAXLEN', max)
end
return {expired, beyond}
"""


def trim_calls(keys: Sequence[QueueKeys], ttl: float | None, most: int | None) -> list[Call]:
    """One TRIM_DEAD call per queue."""
    args = ["" if ttl is None else str(max(int(ttl * 1000), 1)), "" if most is None else most]
    return [("TRIM_DEAD", [k.dead], args) for k in keys]


def trimmed(queues: Sequence[str], replies: Sequence[Sequence[int]]) -> list[TrimmedDeadLetters]:
    """What the calls removed, for the queues where they removed something."""
    return [
        TrimmedDeadLetters(q, int(expired), int(beyond))
        for q, (expired, beyond) in zip(queues, replies, strict=True)
        if expired or beyond
    ]
