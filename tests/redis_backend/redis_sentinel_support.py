"""Redis Sentinel for the tests: a master, two replicas and three sentinels of a test's own,
on free loopback ports, with failover after one second of silence."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import redis

from .redis_support import free_port

__all__ = ["SentinelGroup"]

SERVICE = "asyncq-test"


class SentinelGroup:
    """``redis-server`` processes in ``directory``: a master, its replicas and the
    sentinels watching them (quorum 2)."""

    def __init__(self, executable: str, directory: Path) -> None:
        self.executable = executable
        self.directory = directory
        self.master = free_port()
        self.replicas = [free_port(), free_port()]
        self.sentinels = [free_port(), free_port(), free_port()]
        self._processes: dict[int, subprocess.Popen[bytes]] = {}

    def url(self, query: str = "") -> str:
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.sentinels)
        return f"redis+sentinel://{hosts}/{SERVICE}/0{query}"

    def _server(self, port: int, *options: str) -> None:
        data = self.directory / str(port)
        data.mkdir(exist_ok=True)
        self._processes[port] = subprocess.Popen(
            [
                self.executable,
                *("--port", str(port), "--bind", "127.0.0.1", "--dir", str(data)),
                *("--save", "", "--appendonly", "no", "--logfile", str(data / "log")),
                *options,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
        )

    def _sentinel(self, port: int) -> None:
        conf = self.directory / f"sentinel-{port}.conf"
        conf.write_text(
            f"port {port}\nbind 127.0.0.1\n"
            f"sentinel monitor {SERVICE} 127.0.0.1 {self.master} 2\n"
            f"sentinel down-after-milliseconds {SERVICE} 1000\n"
            f"sentinel failover-timeout {SERVICE} 5000\n"
        )
        self._processes[port] = subprocess.Popen(
            [self.executable, str(conf), "--sentinel", "--logfile", str(conf) + ".log"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
        )

    def start(self, timeout: float = 30.0) -> None:
        """Start everything; return once the replicas are in sync and every sentinel
        knows both replicas and the other sentinels."""
        self._server(self.master)
        for port in self.replicas:
            self._server(port, "--replicaof", "127.0.0.1", str(self.master))
        for port in self.sentinels:
            self._sentinel(port)
        self._until(self._ready, timeout, "the sentinel group did not come up")

    def _ready(self) -> bool:
        with redis.Redis(port=self.master) as master:
            if master.info("replication").get("connected_slaves") != len(self.replicas):
                return False
        for port in self.sentinels:
            with redis.Redis(port=port) as sentinel:
                state = sentinel.sentinel_master(SERVICE)
                if state["num-slaves"] != len(self.replicas):
                    return False
                if state["num-other-sentinels"] != len(self.sentinels) - 1:
                    return False
        return True

    def master_port(self) -> int:
        """The master the sentinels name now."""
        with redis.Redis(port=self.sentinels[0]) as sentinel:
            _, port = sentinel.sentinel_get_master_addr_by_name(SERVICE)
            return int(port)

    def kill(self, port: int) -> None:
        process = self._processes.pop(port)
        process.kill()
        process.wait(10)

    def _until(self, check: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if check():
                    return
            except redis.RedisError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} within {timeout:g} s (logs in {self.directory})")
            time.sleep(0.1)

    def stop(self) -> None:
        for process in self._processes.values():
            process.kill()
        for process in self._processes.values():
            process.wait(10)
        self._processes.clear()
