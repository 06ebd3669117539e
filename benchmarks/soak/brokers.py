"""The brokers a soak runs against, behind one small interface: where their nodes listen
(for the proxies), how clients name them, and how to stop and start a node (the fault
injector's "broker restart").

The soak starts a private broker of its own on free loopback ports, so that it may kill it:

* :class:`PrivateRedis`: ``redis-server`` persisting every write before it replies (AOF,
  ``appendfsync always``, no RDB snapshots) in a directory of its own, so a SIGKILL loses
  nothing it had acknowledged;
* :class:`PrivatePostgres`: ``initdb`` into a directory of its own and ``pg_ctl`` (as the
  ``postgres`` user when run as root: initdb and the server refuse root), ``fsync=on``;
* :class:`SqliteFile`: a file, no server, no network: restarts and cuts do not apply;
* :class:`ExternalBroker`: a broker someone else started (``--broker-url``): proxied, but
  never restarted.

A cluster (Redis Cluster, a RabbitMQ cluster: ``soak/clusters.py``) fits the same
interface: one upstream and one proxy per node, :meth:`Broker.client_url` naming the
proxies, ``stop_node``/``start_node`` for the node to kill. (A Redis Cluster's nodes
announce their proxy's address, :attr:`Broker.endpoints`, or clients would follow MOVED
replies around the proxies.)
"""

from __future__ import annotations

import abc
import glob
import os
import shutil
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import anyio
from anyio.abc import Process, TaskGroup, TaskStatus
from anyio.streams.buffered import BufferedByteReceiveStream

from .proxy import free_port

__all__ = [
    "Broker",
    "BrokerSetupError",
    "ExternalBroker",
    "PrivatePostgres",
    "PrivateRedis",
    "SqliteFile",
    "broker_for",
    "postgres_binaries",
]

Address = tuple[str, int]


class BrokerSetupError(RuntimeError):
    """The private broker could not be set up (a program missing, a start that failed)."""


class Broker(abc.ABC):
    """A broker under test. :meth:`run` holds it up (in the soak's task group) until
    cancelled; the fault injector calls ``stop_node``/``start_node`` in between."""

    kind: str
    upstreams: Sequence[Address] = ()
    """Where each node listens, for a proxy each; empty for a broker with no network."""
    nodes: int = 0
    """Nodes the soak may stop and start; 0: the broker-restart faults do not apply."""
    endpoints: Sequence[Address] = ()
    """Where clients reach each upstream (its proxy), set by the soak before :meth:`run`:
    a cluster's nodes announce these in place of their own addresses."""
    _tg: TaskGroup
    """Where the nodes' own tasks (output readers) run, while :meth:`run` does."""

    @abc.abstractmethod
    def client_url(self, endpoints: Sequence[Address]) -> str:
        """The URL that reaches the broker through ``endpoints`` (a proxy per upstream, or
        the upstreams themselves), without asyncq's options."""

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        async with anyio.create_task_group() as tg:
            self._tg = tg
            for node in range(self.nodes):
                await self.start_node(node)
            task_status.started()
            try:
                await anyio.sleep_forever()
            finally:
                with anyio.CancelScope(shield=True):
                    for node in range(self.nodes):
                        await self.stop_node(node, hard=True)
                tg.cancel_scope.cancel()

    def describe(self, node: int) -> str:
        """``node`` in a fault's report (a cluster's says which node it was)."""
        return f"node {node}"

    async def start_node(self, node: int) -> None:
        raise NotImplementedError(f"{self.kind} nodes cannot be started by the soak")

    async def stop_node(self, node: int, *, hard: bool) -> None:
        """``hard``: a crash (SIGKILL, or what comes closest); else a clean shutdown.
        Stopping a node that is not running does nothing."""
        raise NotImplementedError(f"{self.kind} nodes cannot be stopped by the soak")


def _replace_address(url: str, address: Address) -> str:
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@" if userinfo else ""
    return urlunsplit(parts._replace(netloc=f"{netloc}{address[0]}:{address[1]}"))


class PrivateRedis(Broker):
    kind = "redis"
    nodes = 1

    def __init__(self, directory: Path) -> None:
        executable = shutil.which("redis-server")
        if executable is None:
            raise BrokerSetupError("redis-server is not installed (apt-get install redis-server)")
        self.executable = executable
        self.directory = directory
        self.port = free_port()
        self.upstreams = [("127.0.0.1", self.port)]
        self._process: Process | None = None

    def client_url(self, endpoints: Sequence[Address]) -> str:
        host, port = endpoints[0]
        return f"redis://{host}:{port}/0"

    async def start_node(self, node: int) -> None:
        await self._tg.start(self._serve)

    async def _serve(self, *, task_status: TaskStatus[None]) -> None:
        """Run the server, its output into ``redis.log``; started once it accepts clients
        (its AOF loaded); returns when it exits."""
        command = [
            self.executable,
            *("--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory)),
            *("--appendonly", "yes", "--appendfsync", "always", "--save", ""),
        ]
        process = await anyio.open_process(
            command, stdin=subprocess.DEVNULL, stderr=subprocess.STDOUT
        )
        self._process = process
        assert process.stdout is not None
        output = BufferedByteReceiveStream(process.stdout)
        ready = False
        with (self.directory / "redis.log").open("ab") as log:
            # Read to the end, ready or not: a full pipe would stop the server mid-write.
            with anyio.fail_after(30) as waiting:
                while True:
                    try:
                        line = await output.receive_until(b"\n", 1 << 20)
                    except (anyio.IncompleteRead, anyio.EndOfStream):
                        break
                    log.write(line + b"\n")
                    log.flush()
                    if not ready and b"Ready to accept connections" in line:
                        ready = True
                        waiting.deadline = float("inf")
                        task_status.started()
        if not ready:
            await process.wait()
            raise BrokerSetupError(
                f"redis-server exited with {process.returncode} before it was ready; "
                f"see {self.directory / 'redis.log'}"
            )

    async def stop_node(self, node: int, *, hard: bool) -> None:
        process, self._process = self._process, None
        if process is None or process.returncode is not None:
            return
        if hard:
            process.kill()
        else:
            process.terminate()  # a clean shutdown: the AOF is fsynced and closed
        with anyio.fail_after(30):
            await process.wait()
        await process.aclose()


def postgres_binaries() -> Path:
    """The newest installed server's bin directory (Debian: /usr/lib/postgresql/N/bin)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]))
    if found:
        return Path(found[-1])
    initdb = shutil.which("initdb")
    if initdb is None:
        raise BrokerSetupError("no PostgreSQL server binaries (initdb, pg_ctl) installed")
    return Path(initdb).parent


class PrivatePostgres(Broker):
    """A cluster of its own in ``directory``; a hard stop is ``pg_ctl stop -m immediate``
    (every server process quits at once, no checkpoint: the next start recovers from the
    WAL), since a SIGKILL of the postmaster alone leaves its backends holding the shared
    memory and the next start refuses to run."""

    kind = "postgres"
    nodes = 1

    def __init__(self, directory: Path) -> None:
        self.bin = postgres_binaries()
        self.directory = directory
        self.data = directory / "data"
        self.port = free_port()
        self.upstreams = [("127.0.0.1", self.port)]
        self._as_root = os.geteuid() == 0
        self._running = False

    def client_url(self, endpoints: Sequence[Address]) -> str:
        host, port = endpoints[0]
        return f"postgresql://postgres@{host}:{port}/postgres"

    async def _tool(self, tool: str, *args: str) -> None:
        command = [str(self.bin / tool), *args]
        if self._as_root:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = await anyio.run_process(command, check=False, stderr=subprocess.STDOUT)
        if done.returncode:
            raise BrokerSetupError(f"{tool} failed: {done.stdout.decode(errors='replace')}")

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        if not self.data.exists():
            if self._as_root:
                shutil.chown(self.directory, "postgres", "postgres")
            await self._tool("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-N")
        await super().run(task_status=task_status)

    async def start_node(self, node: int) -> None:
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} "
            f"-c unix_socket_directories={self.directory} -c max_connections=200 "
            "-c fsync=on -c synchronous_commit=on -c full_page_writes=on"
        )
        log = str(self.directory / "server.log")
        await self._tool("pg_ctl", "-D", str(self.data), "-l", log, "-o", options, "-w", "start")
        self._running = True

    async def stop_node(self, node: int, *, hard: bool) -> None:
        if not self._running:
            return
        mode = "immediate" if hard else "fast"
        await self._tool("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")
        self._running = False


class SqliteFile(Broker):
    """One file shared by the worker and producer processes; nothing to restart or cut."""

    kind = "sqlite"

    def __init__(self, directory: Path) -> None:
        self.path = directory / "jobs.db"

    def client_url(self, endpoints: Sequence[Address]) -> str:
        return f"sqlite:///{self.path}"


class ExternalBroker(Broker):
    """A broker at ``url``, started by someone else: a URL of one host is proxied (cuts and
    delays apply), none of it is restarted."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.kind = parts.scheme
        self.url = url
        if parts.hostname and len(parts.netloc.rpartition("@")[2].split(",")) == 1:
            default = {"redis": 6379, "amqp": 5672, "postgresql": 5432, "postgres": 5432}
            port = parts.port or default.get(parts.scheme, 0)
            if port:
                self.upstreams = [(parts.hostname, port)]

    def client_url(self, endpoints: Sequence[Address]) -> str:
        return _replace_address(self.url, endpoints[0]) if self.upstreams else self.url

    async def remove(self, unique: str) -> None:
        """Delete what the soak stored under ``unique`` (a Redis key prefix, a PostgreSQL
        schema): the server is someone else's."""
        if self.kind.startswith("redis"):
            import redis.asyncio

            client = redis.asyncio.Redis.from_url(self.url)
            async with client:
                names = [name async for name in client.scan_iter(f"{unique}:*", count=1000)]
                for start in range(0, len(names), 1000):
                    await client.delete(*names[start : start + 1000])
        elif self.kind.startswith("postgres"):
            import asyncpg

            conn = await asyncpg.connect(self.url.partition("?")[0])
            try:
                await conn.execute(f'DROP SCHEMA IF EXISTS "{unique}" CASCADE')
            finally:
                await conn.close()


def broker_for(kind: str, directory: Path) -> Broker:
    """The private broker of ``kind`` (redis, postgres, sqlite, redis-cluster,
    amqp-cluster), its data in ``directory``."""
    # Imported here: the clusters are built from this module's parts.
    from .clusters import PrivateRabbitCluster, PrivateRedisCluster

    brokers: dict[str, Callable[[Path], Broker]] = {
        "redis": PrivateRedis,
        "postgres": PrivatePostgres,
        "sqlite": SqliteFile,
        "redis-cluster": PrivateRedisCluster,
        "amqp-cluster": PrivateRabbitCluster,
    }
    return brokers[kind](directory)
