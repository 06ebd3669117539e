"""Helpers of the AMQP-specific tests: URLs (with a record store and without), the prefixes
a module's tests claimed, runs and settlements to wait on, lines of a child process,
rabbitmqctl, private RabbitMQ nodes, and the session's private three-node cluster."""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlencode

import anyio
import pytest
import services


def amqp_url(prefix: str, **options: object) -> str:
    """A broker URL on the local RabbitMQ, records in db 15 of the local Redis; every queue,
    exchange and record key starts with ``prefix``."""
    query = urlencode({"records": services.REDIS_URL, "prefix": prefix, **options})
    return f"{services.AMQP_URL}?{query}"


def amqp_postgres_records_url(prefix: str, **options: object) -> str:
    """A broker URL on the local RabbitMQ with its records in PostgreSQL, in the schema
    :func:`records_schema` names (drop it after: ``services.drop_postgres_schema``)."""
    records = f"{services.POSTGRES_URL}?schema={records_schema(prefix)}"
    query = urlencode({"records": records, "prefix": prefix, **options})
    return f"{services.AMQP_URL}?{query}"


def records_schema(prefix: str) -> str:
    return prefix.lower().replace("-", "_")


def rabbitmq_only_url(prefix: str, **options: object) -> str:
    """A broker URL on the local RabbitMQ without a record store (no ``records``)."""
    return f"{services.AMQP_URL}?{urlencode({'prefix': prefix, **options})}"


class Prefixes:
    """The prefixes one module's tests claimed. Each test's Redis keys go when it ends; the
    queues and exchanges of all of them go once, when the module ends, because listing
    them takes rabbitmqctl about a second a call."""

    def __init__(self) -> None:
        self.claimed: list[str] = []

    @contextmanager
    def claim(self, unique: str) -> Iterator[str]:
        services.require_rabbitmq_and_redis()
        self.claimed.append(unique)
        try:
            yield unique
        finally:
            services.delete_redis_keys(unique)

    def delete_entities(self) -> None:
        services.delete_amqp_prefixes(self.claimed)


def _rabbitmqctl() -> tuple[str | None, str]:
    """rabbitmqctl's path, or None and why it cannot be used (checked once per session)."""
    path = shutil.which("rabbitmqctl")
    if path is None:
        return None, "rabbitmqctl is not installed (it comes with the rabbitmq-server package)"
    # It talks to the node with the node's Erlang cookie, which only root (or the rabbitmq
    # user) can read.
    ping = subprocess.run(
        [path, "-q", "ping"], capture_output=True, text=True, timeout=90, check=False
    )
    if ping.returncode != 0:
        why = (ping.stderr or ping.stdout).strip()
        return None, f"rabbitmqctl cannot reach the local node (run as root?): {why}"
    return path, ""


def require_rabbitmqctl() -> str:
    """The path of a working ``rabbitmqctl``, for tests that inspect or stop the broker;
    without one the test fails in CI (``CI=true``) and is skipped elsewhere."""
    path, why = _rabbitmqctl()
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    return path


async def rabbitmqctl(*args: str, timeout: float = 60.0) -> str:
    """Run ``rabbitmqctl ARGS`` without blocking the event loop; its output, or fail."""
    command = [require_rabbitmqctl(), "-q", *args]
    with anyio.fail_after(timeout):
        done = await anyio.run_process(command, check=False, stdin=subprocess.DEVNULL)
    output = done.stdout.decode(errors="replace")
    if done.returncode != 0:
        error = done.stderr.decode(errors="replace")
        raise AssertionError(f"rabbitmqctl {' '.join(args)} exited {done.returncode}: {error}")
    return output


async def queue_types(prefix: str) -> dict[str, str]:
    """The type (classic, quorum) of each queue whose name starts with ``prefix.``."""
    listed = await rabbitmqctl("list_queues", "--no-table-headers", "name", "type")
    found: dict[str, str] = {}
    for line in listed.splitlines():
        name, _, kind = line.partition("\t")
        if name.startswith(f"{prefix}."):
            found[name] = kind.strip()
    return found


NODE_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "rabbitmq_node.sh"
_RABBITMQ_BIN = Path(os.environ.get("RABBITMQ_BIN", "/usr/lib/rabbitmq/bin"))


class PrivateNode:
    """A RabbitMQ node of a test module's own (scripts/rabbitmq_node.sh), on loopback ports
    no other node uses, configured with ``conf`` (rabbitmq.conf lines) and ``advanced`` (an
    advanced.config term): for tests that need a broker configured or broken their way."""

    def __init__(self, directory: Path, conf: str = "", advanced: str = "[].") -> None:
        self.directory = directory
        self.conf = conf
        self.advanced = advanced
        self.port = _free_port_pair()
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"
        self.boot_seconds = 0.0

    def start(self) -> None:
        require_rabbitmq_server()
        began = time.monotonic()
        args = [str(self.directory), str(self.port), self.conf, self.advanced]
        done = subprocess.run(
            ["bash", str(NODE_SCRIPT), "start", *args],
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        self.boot_seconds = time.monotonic() - began
        if done.returncode != 0:
            self.stop()
            pytest.fail(f"the private RabbitMQ node did not start: {done.stderr.strip()}")

    async def rabbitmqctl(self, *args: str, timeout: float = 60.0) -> str:
        """Run ``rabbitmqctl ARGS`` against this node; its output, or fail."""
        # The node's Erlang cookie is in its directory, which the script makes its HOME.
        command = [str(_RABBITMQ_BIN / "rabbitmqctl"), "-q", "-n", self.name, *args]
        env = {**os.environ, "HOME": str(self.directory)}
        with anyio.fail_after(timeout):
            done = await anyio.run_process(command, check=False, env=env)
        if done.returncode != 0:
            error = done.stderr.decode(errors="replace")
            raise AssertionError(f"rabbitmqctl {' '.join(args)} exited {done.returncode}: {error}")
        return done.stdout.decode(errors="replace")

    @property
    def name(self) -> str:
        return f"asyncq-{self.port}@localhost"  # as scripts/rabbitmq_node.sh names it

    def stop(self) -> None:
        subprocess.run(
            ["bash", str(NODE_SCRIPT), "stop", str(self.directory)],
            capture_output=True,
            timeout=120,
            check=False,
        )


def _free_port_pair(count: int = 1) -> int:
    """A port P below 45536 with P .. P + count - 1 and, for each, the port 20000 above
    (the node's distribution port) all free."""
    for _ in range(100):
        port = random.randrange(20000, 30000 - count)
        ports = range(port, port + count)
        if all(_free(p) and _free(p + 20000) for p in ports):
            return port
    raise AssertionError(f"no {count} free pair(s) of loopback ports found")


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def require_rabbitmq_server() -> None:
    """Fail in CI (``CI=true``), skip elsewhere, when RabbitMQ is not installed."""
    if not (_RABBITMQ_BIN / "rabbitmq-server").exists():
        why = "rabbitmq-server is not installed (bash scripts/services.sh installs it)"
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)


CLUSTER_SCRIPT = NODE_SCRIPT.with_name("rabbitmq_cluster.sh")
CLUSTER_NODES = (1, 2, 3)


class PrivateCluster:
    """Three RabbitMQ nodes joined into one cluster (scripts/rabbitmq_cluster.sh), on
    loopback ports no other node uses, for asyncq on quorum queues and for killing the
    node that leads one."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        base = _free_port_pair(len(CLUSTER_NODES))
        self.ports = tuple(base + n - 1 for n in CLUSTER_NODES)
        self.boot_seconds = 0.0
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.ports)
        self.hosts_url = f"amqp://guest:guest@{hosts}/%2F"
        """The broker URL naming all three nodes, without options."""

    def url(self, prefix: str, *, first: int = 1, **options: object) -> str:
        """A URL on all three nodes (listed from node ``first`` on) with quorum queues,
        records in db 15 of the local Redis; every queue, exchange and record key starts
        with ``prefix``."""
        order = [*CLUSTER_NODES[first - 1 :], *CLUSTER_NODES[: first - 1]]
        hosts = ",".join(f"127.0.0.1:{self.ports[n - 1]}" for n in order)
        query = {"records": services.REDIS_URL, "prefix": prefix, "queue_type": "quorum"}
        return f"amqp://guest:guest@{hosts}/%2F?{urlencode({**query, **options})}"

    def node_name(self, n: int) -> str:
        return f"asyncq-{self.ports[n - 1]}@localhost"  # as scripts/rabbitmq_node.sh names it

    def number_of(self, node: str) -> int:
        """Which node (1, 2 or 3) ``node`` (``asyncq-<port>@localhost``) is."""
        for n in CLUSTER_NODES:
            if self.node_name(n) == node:
                return n
        raise AssertionError(f"{node!r} is not a node of this cluster ({self.ports})")

    def start(self) -> None:
        require_rabbitmq_server()
        began = time.monotonic()
        done = subprocess.run(
            ["bash", str(CLUSTER_SCRIPT), "start", str(self.directory), str(self.ports[0])],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        self.boot_seconds = time.monotonic() - began
        if done.returncode != 0:
            self.stop()
            pytest.fail(f"the private RabbitMQ cluster did not start: {done.stderr.strip()}")

    def stop(self) -> None:
        subprocess.run(
            ["bash", str(CLUSTER_SCRIPT), "stop", str(self.directory)],
            capture_output=True,
            timeout=180,
            check=False,
        )

    async def kill(self, n: int) -> None:
        """SIGKILL node ``n``'s Erlang VM (a crash: nothing is flushed or handed over) and
        return once it is gone."""
        await self._script("kill", str(n), timeout=60)

    async def restart(self, n: int) -> None:
        """Start node ``n`` again and return once the cluster counts three running nodes."""
        await self._script("restart", str(n), timeout=180)

    async def _script(self, *args: str, timeout: float) -> None:
        command = ["bash", str(CLUSTER_SCRIPT), args[0], str(self.directory), *args[1:]]
        with anyio.fail_after(timeout):
            done = await anyio.run_process(command, check=False, stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            error = done.stderr.decode(errors="replace").strip()
            raise AssertionError(f"rabbitmq_cluster.sh {' '.join(args)}: {error}")

    async def rabbitmqctl(self, n: int, *args: str, timeout: float = 60.0) -> str:
        """Run ``rabbitmqctl ARGS`` against node ``n``; its output, or fail."""
        # The nodes' shared Erlang cookie is in the cluster's directory: make it HOME.
        command = [str(_RABBITMQ_BIN / "rabbitmqctl"), "-q", "-n", self.node_name(n), *args]
        env = {**os.environ, "HOME": str(self.directory)}
        with anyio.fail_after(timeout):
            done = await anyio.run_process(command, check=False, env=env, stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            error = done.stderr.decode(errors="replace")
            raise AssertionError(f"rabbitmqctl {' '.join(args)} exited {done.returncode}: {error}")
        return done.stdout.decode(errors="replace")

    async def leader(self, queue: str, *, ask: int = 1) -> int:
        """The node (1, 2 or 3) leading quorum queue ``queue``'s Raft group, asking node
        ``ask``."""
        listed = await self.rabbitmqctl(ask, "list_queues", "--no-table-headers", "name", "leader")
        for line in listed.splitlines():
            name, _, leader = line.partition("\t")
            if name == queue:
                return self.number_of(leader.strip())
        raise AssertionError(f"node {ask} lists no queue {queue!r}: {listed}")


class SessionCluster:
    """The test session's one :class:`PrivateCluster`: started by the first test that needs
    it (booting three nodes takes a while, and most sessions need none), stopped by the
    session fixture in tests/conftest.py."""

    def __init__(self) -> None:
        self._cluster: PrivateCluster | None = None
        self._failed: BaseException | None = None

    def get(self) -> PrivateCluster:
        """The cluster, started; a start that failed fails (or skips) every later caller
        the same way instead of booting again."""
        if self._failed is not None:
            raise self._failed
        if self._cluster is None:
            directory = Path(tempfile.mkdtemp(prefix="asyncq-rabbitmq-cluster-"))
            cluster = PrivateCluster(directory)
            try:
                cluster.start()
            except (Exception, pytest.skip.Exception, pytest.fail.Exception) as exc:
                self._failed = exc
                shutil.rmtree(directory, ignore_errors=True)
                raise
            ports, took = cluster.ports, cluster.boot_seconds
            print(f"\nRabbitMQ cluster on 127.0.0.1 ports {ports} running in {took:.1f} s")
            self._cluster = cluster
        return self._cluster

    def stop(self) -> None:
        cluster, self._cluster = self._cluster, None
        if cluster is not None:
            cluster.stop()
            shutil.rmtree(cluster.directory, ignore_errors=True)


SESSION_CLUSTER = SessionCluster()
