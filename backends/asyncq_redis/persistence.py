"""What the Redis a worker uses keeps on disk, and what a restart of it would lose.

Redis keeps asyncq's jobs in memory; only its persistence settings decide what survives a
restart or a crash: the append-only file (``appendonly``, fsynced as ``appendfsync`` says)
and RDB snapshots (``save`` points). A worker reads them once at start
(:func:`read_persistence`) and says what they mean (:func:`log_persistence`): one WARNING
when nothing is persisted, an INFO line naming the window a crash may lose otherwise.

Managed services often rename or refuse ``CONFIG``; then ``INFO persistence`` still tells
whether the AOF is on, but neither its fsync policy nor the save points, so the verdict is
"unknown", logged at DEBUG: a warning is given only when the server itself said nothing is
persisted. Nothing here raises for what the server refuses: a failure to read is a DEBUG
line, never a worker that does not start.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import redis.asyncio as aioredis
from redis import exceptions as rx
from redis.asyncio.cluster import RedisCluster

from asyncq.backend import redact_url

__all__ = ["DOCS", "Persistence", "log_persistence", "read_persistence"]

log = logging.getLogger("asyncq.redis")

DOCS = "the 'Redis persistence' section of asyncq's README"
"""Where the log lines send the reader."""

_UNREADABLE = (rx.RedisError, rx.RedisClusterException, OSError)
"""What a refused, renamed or unanswered command raises (RedisClusterException is not a
RedisError)."""

_FSYNC_POLICIES = ("always", "everysec", "no")


@dataclass(frozen=True, slots=True)
class Persistence:
    """One Redis server's persistence settings, as far as it lets them be read."""

    server: str
    """The server's address (``host:port``; a cluster's primary node's)."""
    aof: bool | None
    """Whether the append-only file is on (``appendonly``); None: unknown."""
    appendfsync: str | None
    """The AOF's fsync policy: ``always``, ``everysec`` or ``no`` (set even while the AOF is
    off); None: unknown, as it is when ``CONFIG`` is refused."""
    save: tuple[tuple[int, int], ...] | None
    """The RDB save points, each ``(seconds, changes)``: a snapshot once ``seconds`` have
    passed with at least ``changes`` writes. ``()``: no snapshots; None: unknown."""

    @property
    def persists_nothing(self) -> bool:
        """True only when the server said so: no AOF and no save points."""
        return self.aof is False and self.save == ()


async def read_persistence(client: aioredis.Redis | RedisCluster) -> tuple[Persistence, ...]:
    """The persistence settings of the server ``client`` talks to; on a cluster, of every
    primary (replicas hold no writes of their own to lose). Never raises for what a server
    refuses: what could not be read is None."""
    if isinstance(client, RedisCluster):
        found = []
        for node in client.get_primaries():
            config_get = partial(client.config_get, target_nodes=node)
            info = partial(client.info, target_nodes=node)
            found.append(await _read(node.name, config_get, info))
        return tuple(found)
    return (await _read(_address(client), client.config_get, client.info),)


def log_persistence(found: Sequence[Persistence], where: str) -> None:
    """Say on ``asyncq.redis`` what ``found`` means for the jobs in the Redis at ``where``
    (its URL, logged without its password): one WARNING if any server persists nothing,
    INFO for a crash window, DEBUG when the settings could not be read or lose nothing."""
    where = redact_url(where)
    verdicts: dict[tuple[int, str], list[str]] = {}
    for persistence in found:
        verdicts.setdefault(_verdict(persistence), []).append(persistence.server)
    for (level, text), servers in verdicts.items():
        # Servers with one verdict share one line, so a cluster whose primaries all persist
        # nothing still gets a single warning.
        nodes = f" (primaries {', '.join(servers)})" if len(found) > 1 else ""
        log.log(level, "Redis at %s%s: %s", where, nodes, text)


Ask = Callable[..., Awaitable[Any]]
"""A redis-py command method (``config_get``, ``info``), bound to one server."""


async def _read(server: str, config_get: Ask, info: Ask) -> Persistence:
    aof: bool | None = None
    fsync: str | None = None
    save: tuple[tuple[int, int], ...] | None = None
    try:
        # Two patterns, not one CONFIG GET of three names: several names at once need
        # Redis 7, and asyncq runs on 6.2.
        append = _texts(await config_get("append*"))
        saving = _texts(await config_get("save"))
    except _UNREADABLE as exc:
        log.debug("Redis %s: CONFIG GET failed (%s); reading INFO persistence", server, exc)
    else:
        aof = {"yes": True, "no": False}.get(append.get("appendonly", ""))
        fsync = append.get("appendfsync") if append.get("appendfsync") in _FSYNC_POLICIES else None
        save = _save_points(saving.get("save"))
    if aof is None:
        aof = await _aof_from_info(server, info)
    return Persistence(server=server, aof=aof, appendfsync=fsync, save=save)


async def _aof_from_info(server: str, info: Ask) -> bool | None:
    try:
        reply = await info("persistence")
    except _UNREADABLE as exc:
        log.debug("Redis %s: INFO persistence failed too (%s)", server, exc)
        return None
    enabled = reply.get("aof_enabled") if isinstance(reply, dict) else None
    # The save points are in no INFO field: rdb_changes_since_last_save and
    # rdb_last_save_time describe the last snapshot, not whether another will come.
    return {0: False, 1: True}.get(enabled) if isinstance(enabled, int) else None


def _verdict(p: Persistence) -> tuple[int, str]:
    if p.persists_nothing:
        return logging.WARNING, (
            "nothing is persisted (appendonly no, no save points): a restart of that Redis "
            "loses every queued job, and every delayed job, result and dead letter with "
            "them. Set 'appendonly yes' with 'appendfsync everysec' (a crash "
            "may lose about the last second of writes) or 'appendfsync always' (every "
            f"acknowledged write is on disk first); see {DOCS}"
        )
    if p.aof:
        if p.appendfsync == "always":
            return logging.DEBUG, "appendonly yes, appendfsync always: every write is on disk"
        if p.appendfsync == "everysec":
            return logging.INFO, (
                "appendonly yes, appendfsync everysec: a crash may lose about the last second "
                "of writes (jobs enqueued, finished or retried in it); 'appendfsync always' "
                f"closes that 1 s window (see {DOCS})"
            )
        if p.appendfsync == "no":
            return logging.INFO, (
                "appendonly yes, appendfsync no: the operating system decides when the AOF "
                "reaches the disk (about every 30 s on Linux), so a crash of the machine may "
                "lose the writes it had not flushed; 'appendfsync everysec' bounds that to "
                f"about a second (see {DOCS})"
            )
        return logging.DEBUG, "the AOF is on; its fsync policy cannot be read (CONFIG refused)"
    if p.aof is False and p.save:
        points = " ".join(f"{seconds} {changes}" for seconds, changes in p.save)
        return logging.INFO, (
            f"RDB snapshots only (save {points}): a crash loses every write since the last "
            "snapshot: jobs enqueued since then are gone, jobs finished since then run again; "
            f"'appendonly yes' narrows that to about a second (see {DOCS})"
        )
    if p.aof is False:
        return logging.DEBUG, (
            "the AOF is off and the save points cannot be read (CONFIG refused or renamed): "
            f"whether a restart loses jobs is unknown; see {DOCS}"
        )
    return logging.DEBUG, (
        "its persistence settings cannot be read (CONFIG and INFO refused): whether a "
        f"restart loses jobs is unknown; see {DOCS}"
    )


def _texts(reply: Any) -> dict[str, str]:
    """A CONFIG GET reply as text (redis-py leaves it bytes or str, by client)."""
    if not isinstance(reply, dict):
        return {}
    return {_text(name): _text(value) for name, value in reply.items()}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _save_points(raw: str | None) -> tuple[tuple[int, int], ...] | None:
    """``"3600 1 300 100"`` as ``((3600, 1), (300, 100))``; None for what is not that."""
    if raw is None:
        return None
    numbers = raw.split()
    if len(numbers) % 2 or not all(n.isdigit() for n in numbers):
        return None
    values = [int(n) for n in numbers]
    return tuple(zip(values[::2], values[1::2], strict=True))


def _address(client: aioredis.Redis) -> str:
    kwargs = client.connection_pool.connection_kwargs
    if "path" in kwargs:  # a unix socket
        return str(kwargs["path"])
    return f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"
