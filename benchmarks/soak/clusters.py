"""The clustered brokers a soak runs against, each on loopback ports of its own and started
by the repository's scripts, with one soak proxy per node:

* :class:`PrivateRedisCluster`: three masters and three replicas
  (``scripts/redis_cluster.sh``), every node appending each write to its AOF and fsyncing
  it before it replies, as :class:`~soak.brokers.PrivateRedis` does. Each node announces
  its proxy's port (``cluster-announce-port``; the bus stays on its real port + 10000), so
  that what clients learn from CLUSTER SLOTS and MOVED, and what replicas connect to, is a
  proxy: a cut or a delay reaches every path a job takes. The URL asks for
  ``wait_replicas=1``: an enqueue returns once a replica has the job, so a master killed
  after it returned cannot take the job with it. A broker restart kills (or shuts down)
  the master serving the soak's queue, whose replica takes over after the cluster's node
  timeout (2 s), and starts it again, when it rejoins as a replica; the restart is over
  once the cluster is whole again (every master with a replica in sync).
* :class:`PrivateRabbitCluster`: three RabbitMQ nodes in one cluster
  (``scripts/rabbitmq_cluster.sh``), quorum queues, the job records in a
  :class:`~soak.brokers.PrivateRedis` of the soak's own (not proxied, never restarted: the
  faults are the broker's). A broker restart kills (or stops) the node leading the work
  queue's Raft group and starts it again; the restart is over once the cluster counts three
  running nodes. RabbitMQ has no visibility timeout: the jobs of a worker that stopped
  answering come back when RabbitMQ declares its connection dead, after about two missed
  heartbeats, so the URL asks for a heartbeat of :data:`HEARTBEAT` seconds.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
from collections.abc import Sequence
from pathlib import Path

import anyio
from anyio.abc import TaskStatus
from redis.crc import key_slot

from .brokers import Address, Broker, BrokerSetupError, PrivateRedis

__all__ = ["HEARTBEAT", "PrivateRabbitCluster", "PrivateRedisCluster"]

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
QUEUE = "default"
"""The soak's one queue (its task's default)."""
HEARTBEAT = 2
"""Seconds between AMQP heartbeats: RabbitMQ drops a silent (paused) worker's connection
after about two of them, and its jobs return to the queue, well within a pause."""
_RABBITMQ_BIN = Path(os.environ.get("RABBITMQ_BIN", "/usr/lib/rabbitmq/bin"))


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_run(count: int, offset: int, low: int, high: int) -> int:
    """A port P in [low, high) with P .. P + count - 1, and each one's port + ``offset``
    (a cluster bus, an Erlang distribution port), free now."""
    # Not the soak's seeded generator: the ports must not shift the fault sequence.
    for _ in range(200):
        base = random.randrange(low, high - count)
        if all(_free(p) and _free(p + offset) for p in range(base, base + count)):
            return base
    raise BrokerSetupError(f"no {count} consecutive free loopback ports in {low}-{high}")


async def _script(
    name: str, *args: str, env: dict[str, str] | None = None, timeout: float = 180.0
) -> str:
    """Run ``scripts/NAME ARGS``; its output, or raise with its error output."""
    with anyio.fail_after(timeout):
        done = await anyio.run_process(
            ["bash", str(SCRIPTS / name), *args],
            check=False,
            stdin=subprocess.DEVNULL,
            env=env,
        )
    if done.returncode:
        error = (done.stderr or done.stdout).decode(errors="replace").strip()
        raise BrokerSetupError(f"{name} {' '.join(args)} failed: {error}")
    return done.stdout.decode(errors="replace")


class PrivateRedisCluster(Broker):
    kind = "redis-cluster"
    nodes = 1
    """The one node the soak restarts is "the master serving the queue", whichever that is
    at the time: every key of a queue is in one slot, so no other master holds its jobs."""

    def __init__(self, directory: Path) -> None:
        for program in ("redis-server", "redis-cli"):
            if shutil.which(program) is None:
                raise BrokerSetupError(f"{program} is not installed (apt-get install redis)")
        self.directory = directory / "cluster"
        self.base = _free_run(6, 10000, 21000, 29000)
        self.upstreams = [("127.0.0.1", port) for port in range(self.base, self.base + 6)]
        self._victim: int | None = None
        self._last = 0

    def client_url(self, endpoints: Sequence[Address]) -> str:
        host, port = endpoints[0]
        # wait_timeout: a replica's acknowledgement crosses two proxies, which a delay
        # fault slows by up to a second; an enqueue that times out is retried with its key.
        return f"redis://{host}:{port}/0?cluster=true&wait_replicas=1&wait_timeout=3"

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        announced = self.endpoints or self.upstreams
        env = {
            **os.environ,
            "REDIS_CLUSTER_PERSIST": "1",
            "REDIS_CLUSTER_ANNOUNCE": " ".join(str(port) for _, port in announced),
        }
        await _script("redis_cluster.sh", "start", str(self.directory), str(self.base), env=env)
        self._real_of = {
            port: real for (_, port), (_, real) in zip(announced, self.upstreams, strict=True)
        }
        try:
            task_status.started()
            await anyio.sleep_forever()
        finally:
            with anyio.CancelScope(shield=True):
                await _script("redis_cluster.sh", "stop", str(self.directory))

    async def queue_master(self) -> int:
        """The real port of the master serving the queue's slot, as a live node sees it."""
        slot = key_slot(QUEUE.encode())
        with anyio.fail_after(30):
            while True:
                for _, port in self.upstreams:
                    command = ["redis-cli", "-p", str(port), "cluster", "nodes"]
                    with anyio.move_on_after(2):
                        done = await anyio.run_process(command, check=False)
                        for line in done.stdout.decode().splitlines():
                            fields = line.split()
                            if len(fields) < 9 or "master" not in fields[2].split(","):
                                continue
                            if "fail" in fields[2] or fields[7] != "connected":
                                continue
                            for ranges in fields[8:]:
                                low, _, high = ranges.partition("-")
                                if low.isdigit() and int(low) <= slot <= int(high or low):
                                    announced = int(fields[1].split("@")[0].rpartition(":")[2])
                                    return self._real_of.get(announced, announced)
                # Mid-failover no node may name a live master for it: look again shortly.
                await anyio.sleep(0.2)

    def describe(self, node: int) -> str:
        return f"master 127.0.0.1:{self._last} (the queue's)"

    async def stop_node(self, node: int, *, hard: bool) -> None:
        port = self._victim = self._last = await self.queue_master()
        if hard:
            await _script("redis_cluster.sh", "kill", str(self.directory), str(port))
            return
        # A clean shutdown (SIGTERM): Redis 7 lets the replicas catch up first.
        pid = int((self.directory / str(port) / "pid").read_text())
        os.kill(pid, signal.SIGTERM)
        # Not our child, so not ours to wait(2) for: tail(1) watches the pid instead.
        with anyio.fail_after(30):
            await anyio.run_process(["tail", f"--pid={pid}", "-f", "/dev/null"])

    async def start_node(self, node: int) -> None:
        port, self._victim = self._victim, None
        if port is None:
            return
        await _script("redis_cluster.sh", "restart", str(self.directory), str(port))
        await _script("redis_cluster.sh", "wait", str(self.directory))


class PrivateRabbitCluster(Broker):
    kind = "amqp-cluster"
    nodes = 1
    """The one node the soak restarts is "the node leading the work queue's Raft group",
    whichever that is at the time."""

    def __init__(self, directory: Path) -> None:
        if not (_RABBITMQ_BIN / "rabbitmq-server").exists():
            raise BrokerSetupError(
                f"no {_RABBITMQ_BIN}/rabbitmq-server (apt-get install rabbitmq-server)"
            )
        self.directory = directory / "rabbitmq"
        (directory / "records").mkdir()
        self.records = PrivateRedis(directory / "records")
        self.base = _free_run(3, 20000, 22000, 30000)
        self.upstreams = [("127.0.0.1", port) for port in range(self.base, self.base + 3)]
        self._victim: int | None = None
        self._last = 0

    def client_url(self, endpoints: Sequence[Address]) -> str:
        hosts = ",".join(f"{host}:{port}" for host, port in endpoints)
        records = f"redis://127.0.0.1:{self.records.port}/0"
        return (
            f"amqp://guest:guest@{hosts}/%2F?queue_type=quorum&heartbeat={HEARTBEAT}"
            f"&records={records}"
        )

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        async with anyio.create_task_group() as tg:
            await tg.start(self.records.run)
            try:
                await _script("rabbitmq_cluster.sh", "start", str(self.directory), str(self.base))
                task_status.started()
                await anyio.sleep_forever()
            finally:
                with anyio.CancelScope(shield=True):
                    try:
                        await _script(
                            "rabbitmq_cluster.sh", "stop", str(self.directory), timeout=90
                        )
                    except (BrokerSetupError, TimeoutError):
                        # A node caught mid-restart may not answer rabbitmqctl stop: a
                        # node the soak started must not outlive it.
                        for n in ("1", "2", "3"):
                            await _script("rabbitmq_cluster.sh", "kill", str(self.directory), n)
                tg.cancel_scope.cancel()

    async def leader(self) -> int:
        """The node (1, 2 or 3) leading the work queue's Raft group, as a live node sees it;
        node 1 if none can tell (the queue not declared yet)."""
        queue = f"asyncq.{QUEUE}"  # the backend's default prefix
        env = {
            **os.environ,
            "HOME": str(self.directory),  # where the nodes' shared Erlang cookie is
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_CTL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        }
        for _, port in self.upstreams:
            command = [
                *(str(_RABBITMQ_BIN / "rabbitmqctl"), "-q", "-n", f"asyncq-{port}@localhost"),
                *("list_queues", "--no-table-headers", "name", "leader"),
            ]
            with anyio.move_on_after(15):
                done = await anyio.run_process(command, check=False, env=env)
                for line in done.stdout.decode().splitlines():
                    name, _, leader = line.partition("\t")
                    if name == queue:
                        number = int(leader.strip().partition("@")[0].rpartition("-")[2])
                        return number - self.base + 1
        return 1

    def describe(self, node: int) -> str:
        return f"node {self._last} (the queue's leader)"

    async def stop_node(self, node: int, *, hard: bool) -> None:
        n = self._victim = self._last = await self.leader()
        if hard:
            await _script("rabbitmq_cluster.sh", "kill", str(self.directory), str(n))
        else:
            await _script("rabbitmq_node.sh", "stop", str(self.directory / str(n)))

    async def start_node(self, node: int) -> None:
        n, self._victim = self._victim, None
        if n is not None:
            await _script("rabbitmq_cluster.sh", "restart", str(self.directory), str(n))
