"""The hot commands' connections on a Redis Cluster: a ``Wire`` per master, each command
sent to the master that serves its key's slot.

A batch (one enqueue_many, one settle of many jobs) becomes one pipelined round trip per
master it touches, all in flight at once; the replies come back in the batch's order.
asyncq's scripts each work on one queue's keys, and a queue's keys share a hash tag, so
every command has one slot.

The slot map is the cluster client's (redis-py's ``NodesManager``). When the cluster
answers that a slot has moved (``MOVED``, after a failover or a resharding), is being
moved (``ASK``), or is down for a moment (``CLUSTERDOWN``, ``TRYAGAIN``, a master that
stopped answering), the map is read again from the cluster and the commands concerned
are sent again, for up to ``REROUTE_SECONDS``; then the last error is raised, which the
backend reports as ``BrokerUnavailable``. Sending a script call again is safe: each of
asyncq's scripts does nothing the second time (an enqueue of a job id already there is
refused, a settle of an entry already settled finds nothing).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from redis import exceptions as rx
from redis.crc import key_slot

from .wire import Command, NotReplicated, Wire, check_replicas

__all__ = ["REROUTE_SECONDS", "ClusterWire", "command_key"]

REROUTE_SECONDS = 10.0
"""How long a batch keeps following a cluster that is failing over. A master that stops
answering is replaced by its replica once the other masters have missed it for
``cluster-node-timeout`` (15 s by default; 2 s in asyncq's test cluster) plus an election
(about a second): with the default timeout, callers see ``BrokerUnavailable`` for part of
a failover and go on once it is done (a worker backs off and fetches again)."""

_PAUSE = 0.1  # seconds between looks at a cluster that is failing over, doubling to 1 s
_MOVED = ("MOVED ", "ASK ", "CLUSTERDOWN", "TRYAGAIN")


def command_key(command: Command) -> Any:
    """The key that routes ``command``, or None for a command of the whole server (SCRIPT
    LOAD): EVALSHA's first key, XREADGROUP's first stream, otherwise the first argument."""
    name = str(command[0]).upper()
    if name in ("EVALSHA", "EVAL"):
        return command[3] if int(command[2]) > 0 else None
    if name == "XREADGROUP":
        return command[list(map(str, command)).index("STREAMS") + 1]
    if name in ("SCRIPT", "WAIT", "PING"):
        return None
    return command[1]


def _slot(key: Any) -> int:
    return key_slot(key if isinstance(key, bytes) else str(key).encode())


def _redirected(reply: Any) -> bool:
    return isinstance(reply, rx.ResponseError) and str(reply).startswith(_MOVED)


class ClusterWire:
    """``Wire``'s calls on a cluster: ``execute``, ``call``, ``drop``, ``close``."""

    def __init__(self, cluster: Any, *, timed: bool = True) -> None:
        """``cluster``: a connected ``redis.asyncio.RedisCluster``; ``timed`` as ``Wire``."""
        self._cluster = cluster
        self._timed = timed
        self._wires: dict[str, Wire] = {}
        self._refreshing: asyncio.Task[None] | None = None

    def _wire(self, node: Any) -> Wire:
        wire = self._wires.get(node.name)
        if wire is None:
            wire = self._wires[node.name] = Wire(node, timed=self._timed)
        return wire

    def _primaries(self) -> list[Any]:
        return list(self._cluster.get_primaries())

    def _route(self, command: Command, asked: dict[int, Any], i: int) -> list[Any]:
        """The nodes ``command`` goes to: its slot's master (or where an ASK sent it), or
        every master for a command of the whole server."""
        if i in asked:
            return [asked[i]]
        key = command_key(command)
        if key is None:
            return self._primaries()
        return [self._cluster.nodes_manager.get_node_from_slot(_slot(key))]

    async def execute(
        self, commands: Sequence[Command], *, wait: tuple[int, int] | None = None
    ) -> list[Any]:
        """Each command's reply, in order; an error reply is returned as its exception.
        ``wait`` (replicas, milliseconds): each master's part of the batch ends with
        ``WAIT``, and a master that had fewer replicas take it fails its commands with
        ``rx.ConnectionError``. A cluster that stays unreachable raises."""
        replies: list[Any] = [None] * len(commands)
        todo = list(range(len(commands)))
        asked: dict[int, Any] = {}  # command -> the node an ASK named
        loop = asyncio.get_running_loop()
        deadline = loop.time() + REROUTE_SECONDS
        pause = _PAUSE
        while True:
            groups: dict[str, tuple[Any, list[int]]] = {}
            for i in todo:
                for node in self._route(commands[i], asked, i):
                    groups.setdefault(node.name, (node, []))[1].append(i)
            results = await asyncio.gather(
                *(
                    self._send(
                        node,
                        [commands[i] for i in idx],
                        i_asked=[i in asked for i in idx],
                        wait=wait,
                    )
                    for node, idx in groups.values()
                ),
                return_exceptions=True,
            )
            again: list[int] = []
            failure: BaseException | None = None
            asked = {}
            for (_node, idx), result in zip(groups.values(), results, strict=True):
                if isinstance(result, BaseException):
                    retried = rx.ConnectionError | rx.TimeoutError | OSError
                    if isinstance(result, NotReplicated) or not isinstance(result, retried):
                        raise result
                    failure = result
                    again += idx
                    continue
                for i, reply in zip(idx, result, strict=True):
                    if _redirected(reply):
                        failure = reply
                        text = str(reply)
                        if text.startswith("ASK "):
                            target = self._node_at(text.split()[2])
                            if target is not None:
                                asked[i] = target
                        again.append(i)
                    elif replies[i] is None or isinstance(reply, BaseException):
                        # A command of the whole server (SCRIPT LOAD) answers as the first
                        # master did, or with the refusal of any master.
                        replies[i] = reply
            todo = sorted(set(again))
            if not todo:
                return replies
            if loop.time() >= deadline:
                assert failure is not None
                if isinstance(failure, rx.ResponseError):
                    raise rx.ConnectionError(f"Redis Cluster kept redirecting: {failure}")
                raise failure
            if len(asked) < len(todo):  # not merely ASKed elsewhere: the map is out of date
                await self._refresh()
                if failure is not None and not _redirected(failure):
                    await asyncio.sleep(pause)
                    pause = min(pause * 2, 1.0)

    async def _send(
        self,
        node: Any,
        commands: list[Command],
        *,
        i_asked: list[bool],
        wait: tuple[int, int] | None,
    ) -> list[Any]:
        batch: list[Command] = []
        for command, asked in zip(commands, i_asked, strict=True):
            if asked:
                batch.append(("ASKING",))
            batch.append(command)
        if wait is not None:
            batch.append(("WAIT", *wait))
        replies = await self._wire(node).execute(batch)
        if wait is not None:
            *replies, acked = replies
            # A node that no longer serves the slot (a master that came back as a replica)
            # redirects the writes and refuses WAIT: nothing was written there, and the
            # MOVED sends the commands on.
            if not any(_redirected(reply) for reply in replies):
                check_replicas(acked, wait, node.name)
        if any(i_asked):
            kept, it = [], iter(replies)
            for asked in i_asked:
                if asked:
                    next(it)  # ASKING's OK
                kept.append(next(it))
            replies = kept
        return replies

    def _node_at(self, address: str) -> Any:
        host, _, port = address.rpartition(":")
        return self._cluster.get_node(host=host, port=int(port))

    async def _refresh(self) -> None:
        """Read the slot map again (one read at a time, shared by whoever asks meanwhile);
        connections to nodes that left the cluster are closed."""
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.ensure_future(self._reload())
        try:
            await asyncio.shield(self._refreshing)
        except (rx.RedisError, rx.RedisClusterException, OSError):
            pass  # no node answered: the caller tries again until its deadline
        except RuntimeError:
            # redis-py before 6 reads its startup nodes while its own command path may drop
            # a failed one ("dictionary changed size during iteration"): read again later.
            pass

    async def _reload(self) -> None:
        await self._cluster.nodes_manager.initialize()
        live = {node.name for node in self._primaries()}
        for name in [name for name in self._wires if name not in live]:
            await self._wires.pop(name).close()

    async def call(self, *command: Any) -> Any:
        """One command's reply; an error reply raises."""
        (reply,) = await self.execute([command])
        if isinstance(reply, BaseException):
            raise reply
        return reply

    def drop(self, error: BaseException) -> None:
        for wire in self._wires.values():
            wire.drop(error)

    async def close(self) -> None:
        wires, self._wires = self._wires, {}
        for wire in wires.values():
            await wire.close()
