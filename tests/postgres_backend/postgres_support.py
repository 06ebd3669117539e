"""A PostgreSQL server of a test's own (``initdb`` into a fresh directory, on a loopback
port of its own), which the test may stop and start again: for outages without touching the
shared server; and a PgBouncer of a test's own in front of the shared server. Both run as
the ``postgres`` user when the tests run as root (``initdb`` and ``pgbouncer`` refuse
root)."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import anyio
import pytest
from anyio.abc import SocketStream, TaskStatus

__all__ = ["LateClosingProxy", "PrivatePgBouncer", "PrivatePostgres", "postgres_binaries"]


def postgres_binaries() -> Path:
    """The newest installed server's bin directory (Debian: /usr/lib/postgresql/N/bin)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]))
    if found:
        return Path(found[-1])
    initdb = shutil.which("initdb")
    if initdb is None:
        message = "no PostgreSQL server binaries (initdb); run: bash scripts/services.sh"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return Path(initdb).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PrivatePostgres:
    """``start``/``stop`` a server whose data stays in its directory between the two."""

    def __init__(self) -> None:
        self.bin = postgres_binaries()
        self.port = free_port()
        self.directory = Path(tempfile.mkdtemp(prefix="asyncq-pg-"))
        self.data = self.directory / "data"
        self._as_root = os.geteuid() == 0
        if self._as_root:
            shutil.chown(self.directory, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-N")

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str) -> None:
        command = [str(self.bin / tool), *args]
        if self._as_root:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"{tool} failed: {done.stderr or done.stdout}"

    def start(self, **settings: str) -> None:
        """Start (again); ``settings`` are server settings for this run, e.g.
        ``jit_above_cost="0"``."""
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} "
            f"-c unix_socket_directories={self.directory} -c fsync=on"
        )
        options += "".join(f" -c {name}={value}" for name, value in settings.items())
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.directory / "server.log"),
            "-o", options, "-w", "-t", "60", "start",
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        """``fast`` ends sessions and shuts down cleanly; ``immediate`` is a crash (the
        next start recovers from the WAL)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def remove(self) -> None:
        try:
            self.stop("immediate")
        except AssertionError:
            pass  # not running
        shutil.rmtree(self.directory, ignore_errors=True)


class PrivatePgBouncer:
    """A PgBouncer on a loopback port of its own, in ``pool_mode`` (transaction by default),
    in front of the PostgreSQL at ``host:port``, with at most ``server_connections`` server
    connections per database and user (fewer than a pool of clients, so sessions really are
    shared); ``round_robin``: each transaction to the next idle server connection (PgBouncer's
    ``server_round_robin``), not the one used last, so that consecutive statements of one
    client land on different server sessions whenever several are idle."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 5432,
        *,
        pool_mode: str = "transaction",
        server_connections: int = 4,
        round_robin: bool = False,
    ) -> None:
        binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
        if not Path(binary).exists():
            message = "no pgbouncer; run: bash scripts/services.sh"
            if os.environ.get("CI"):
                pytest.fail(message)
            pytest.skip(message)
        self.binary = binary
        self.port = free_port()
        self.directory = Path(tempfile.mkdtemp(prefix="asyncq-pgbouncer-"))
        (self.directory / "users.txt").write_text('"postgres" ""\n')
        (self.directory / "pgbouncer.ini").write_text(
            f"""[databases]
* = host={host} port={port}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.port}
unix_socket_dir =
auth_type = trust
auth_file = {self.directory / "users.txt"}
pool_mode = {pool_mode}
default_pool_size = {server_connections}
max_client_conn = 500
logfile = {self.directory / "pgbouncer.log"}
pidfile = {self.directory / "pgbouncer.pid"}
admin_users = postgres
server_round_robin = {int(round_robin)}
"""
        )
        self._as_root = os.geteuid() == 0
        if self._as_root:
            shutil.chown(self.directory, "postgres", "postgres")
            for name in ("users.txt", "pgbouncer.ini"):
                shutil.chown(self.directory / name, "postgres", "postgres")
        self._process: subprocess.Popen[bytes] | None = None

    def url(self, database: str = "test") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        command = [self.binary, str(self.directory / "pgbouncer.ini")]
        if self._as_root:
            command = ["runuser", "-u", "postgres", "--", *command]
        # Its log is in the directory; runuser's own words on SIGTERM go nowhere either.
        self._process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 30
        while True:  # up once its port takes connections
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if self._process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"pgbouncer did not start: {self.log()}") from None
                time.sleep(0.05)

    def add_user(self, name: str) -> None:
        """Let ``name`` in too (trust still needs the name in the auth file): the admin
        console's RELOAD, which answers once the files are read again."""
        with (self.directory / "users.txt").open("a") as users:
            users.write(f'"{name}" ""\n')
        done = subprocess.run(
            ["psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d",
             "pgbouncer", "-Atqc", "RELOAD"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert done.returncode == 0, f"pgbouncer RELOAD failed: {done.stderr}"

    def log(self) -> str:
        path = self.directory / "pgbouncer.log"
        return path.read_text() if path.exists() else ""

    def remove(self) -> None:
        if self._process is not None and self._process.poll() is None:
            # pgbouncer itself, by its pid file: runuser, told instead, waits 2 s for it.
            pidfile = self.directory / "pgbouncer.pid"
            try:
                os.kill(int(pidfile.read_text()), signal.SIGTERM)
            except (OSError, ValueError):
                self._process.terminate()
            self._process.wait(timeout=30)
        shutil.rmtree(self.directory, ignore_errors=True)


class LateClosingProxy:
    """A TCP proxy on a loopback port in front of ``127.0.0.1:upstream_port`` that passes a
    server's closing on to the client only ``linger`` seconds late (what a proxy, a
    connection pooler or a slow network may do): in between, the client has read the
    server's last message (a fast shutdown's ``FATAL``) on a connection that still looks
    open. Run :meth:`serve` in a task group."""

    def __init__(self, upstream_port: int, linger: float) -> None:
        self.upstream_port = upstream_port
        self.linger = linger
        self.port = free_port()

    def url(self, path: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{path}"

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=self.port)
        async with listener, anyio.create_task_group() as tg:
            task_status.started()
            await listener.serve(self._handle, tg)

    async def _handle(self, client: SocketStream) -> None:
        async with client:
            try:
                upstream = await anyio.connect_tcp("127.0.0.1", self.upstream_port)
            except OSError:
                return  # the server is down: the client sees its connection closed
            async with upstream, anyio.create_task_group() as tg:

                async def to_server() -> None:
                    await _pipe(client, upstream)
                    tg.cancel_scope.cancel()  # the client left: nothing lingers

                async def to_client() -> None:
                    await _pipe(upstream, client)
                    await anyio.sleep(self.linger)
                    tg.cancel_scope.cancel()

                tg.start_soon(to_server)
                tg.start_soon(to_client)


async def _pipe(source: SocketStream, sink: SocketStream) -> None:
    while True:
        try:
            data = await source.receive()
            await sink.send(data)
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            return
