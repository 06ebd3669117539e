"""A Redis Cluster of three masters and three replicas for the tests, started once per
session by ``scripts/redis_cluster.sh`` on loopback ports of its own and stopped when the
session ends; and the cleanup of what a test left on it."""

from __future__ import annotations

import atexit
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import redis
import services

__all__ = ["LocalRedisCluster", "cluster", "delete_cluster_keys"]

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "redis_cluster.sh"
BUS_OFFSET = 10000  # a node's cluster bus listens on its port + 10000


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _base_port() -> int:
    """The first of six consecutive free ports (their bus ports free too)."""
    for base in range(17100, 20000, 10):
        ports = range(base, base + 6)
        if all(_free(p) and _free(p + BUS_OFFSET) for p in ports):
            return base
    raise RuntimeError("no six consecutive free loopback ports for a Redis Cluster")


class LocalRedisCluster:
    """Six redis-server processes on 127.0.0.1: masters on ``base`` .. ``base`` + 2, their
    replicas on the next three."""

    def __init__(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="asyncq-redis-cluster-"))
        self.base = _base_port()

    def url(self, port: int | None = None) -> str:
        return f"redis://127.0.0.1:{self.base if port is None else port}/0?cluster=true"

    @property
    def ports(self) -> range:
        return range(self.base, self.base + 6)

    def start(self) -> None:
        subprocess.run(
            ["bash", str(SCRIPT), "start", str(self.directory), str(self.base)],
            check=True,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def _node(self, command: str, port: int) -> None:
        subprocess.run(
            ["bash", str(SCRIPT), command, str(self.directory), str(port)],
            check=True,
            capture_output=True,
            timeout=60,
        )

    def kill(self, port: int) -> None:
        """SIGKILL the node on ``port`` and return once its port is closed."""
        self._node("kill", port)

    def restart(self, port: int) -> None:
        """Start the node on ``port`` again; it rejoins the cluster (a replaced master as a
        replica of its successor)."""
        self._node("restart", port)

    def stop(self) -> None:
        subprocess.run(
            ["bash", str(SCRIPT), "stop", str(self.directory)], capture_output=True, timeout=120
        )
        shutil.rmtree(self.directory, ignore_errors=True)


_STARTED: list[LocalRedisCluster] = []


def cluster() -> LocalRedisCluster:
    """The session's cluster, started by the first test that needs it (a test without
    redis-server fails under CI=true and skips elsewhere)."""
    if not _STARTED:
        services.require_redis_server()
        local = LocalRedisCluster()
        try:
            local.start()
        except subprocess.CalledProcessError as exc:
            local.stop()
            raise RuntimeError(f"the Redis Cluster did not start: {exc.stderr}") from exc
        atexit.register(local.stop)
        _STARTED.append(local)
    return _STARTED[0]


def delete_cluster_keys(prefix: str) -> None:
    """Remove every key under ``prefix`` from every master of the session's cluster."""
    if not _STARTED:
        return
    for port in list(_STARTED[0].ports)[:3]:
        with redis.Redis(host="127.0.0.1", port=port) as node:
            try:
                names = list(node.scan_iter(f"{prefix}:*", count=1000))
            except redis.ResponseError:
                continue
            for name in names:
                # One by one: each key may be in a slot of its own.
                try:
                    node.delete(name)
                except redis.ResponseError:  # MOVED: this node is a replica now
                    pass
