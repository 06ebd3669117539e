"""Helpers of the Redis-specific tests: URLs, run and settlement records to wait on, lines of
a child process, and a private redis-server a test may stop and start."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import anyio
import pytest
import services
from anyio.abc import Process
from asyncq_redis import RedisBackend, wire
from harness import Lines
from redis.asyncio.connection import AbstractConnection

import asyncq


def redis_url(prefix: str, *, db: int = 15, port: int = 6379, **options: object) -> str:
    """A broker URL on the local Redis (db 15 unless told), keys under ``prefix``."""
    return f"redis://127.0.0.1:{port}/{db}?{urlencode({'prefix': prefix, **options})}"


@contextmanager
def claimed_prefix(unique: str) -> Iterator[str]:
    """A key prefix for one test on the shared Redis; its keys are deleted afterwards."""
    services.require_redis()
    try:
        yield unique
    finally:
        services.delete_redis_keys(unique)


def redis_client(app: asyncq.App) -> Any:
    """The redis-py client of ``app``'s Redis backend (connected while the App is open)."""
    backend = app.backend
    assert isinstance(backend, RedisBackend)
    return backend.client


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PrivateRedis:
    """A redis-server of this test's own, persisting every write (AOF, fsync always) in
    ``directory``, so it can be stopped and started again without losing data."""

    def __init__(self, executable: str, directory: Path, *options: str) -> None:
        """``options`` go on the server's command line (``--requirepass``, "secret")."""
        self.executable = executable
        self.directory = directory
        self.options = options
        self.port = free_port()
        self.process: Process | None = None
        self.log: list[str] = []

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self, *, timeout: float = 10.0) -> None:
        """Start the server and return once it accepts connections (its data loaded)."""
        assert self.process is None, "already running"
        command = [
            self.executable,
            *("--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory)),
            *("--appendonly", "yes", "--appendfsync", "always", "--save", ""),
            *self.options,
        ]
        self.process = await anyio.open_process(
            command, stdin=subprocess.DEVNULL, stderr=subprocess.STDOUT
        )
        lines = Lines(self.process.stdout)
        try:
            await lines.expect(lambda line: "Ready to accept connections" in line, timeout=timeout)
        finally:
            self.log += lines.seen
        # The rest of its log (a few lines at shutdown) fits in the pipe: nothing reads it.

    async def stop(self) -> None:
        """SIGTERM, as a service manager would, and wait until the server has exited."""
        process, self.process = self.process, None
        assert process is not None, "not running"
        process.terminate()
        with anyio.fail_after(10):
            await process.wait()
        await process.aclose()

    async def kill(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            with anyio.CancelScope(shield=True):
                if process.returncode is None:
                    process.kill()
                await process.aclose()


class RoundTrips:
    """What a backend sends, noted on the way, through its redis-py client and through its
    connection for the hot commands (``Wire``): each write of packed commands to a
    connection (a round trip), each pipeline with its commands, each single command. Everything
    is still sent; nothing is answered in its place."""

    def __init__(self, client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        self.sends = 0
        self.pipelines: list[list[tuple[Any, ...]]] = []
        self.commands: list[tuple[Any, ...]] = []
        real_send = AbstractConnection.send_packed_command
        real_link_send = wire._Link.send
        real_pipeline = client.pipeline
        real_command = client.execute_command
        real_execute = wire.Wire.execute
        real_call = wire.Wire.call

        async def send_packed_command(conn: Any, *args: Any, **kwargs: Any) -> None:
            self.sends += 1
            await real_send(conn, *args, **kwargs)

        def link_send(link: Any, *args: Any) -> Any:
            self.sends += 1
            return real_link_send(link, *args)

        def pipeline(*args: Any, **kwargs: Any) -> Any:
            pipe = real_pipeline(*args, **kwargs)
            real_pipe_execute = pipe.execute

            async def execute(*args: Any, **kwargs: Any) -> Any:
                self.pipelines.append([command for command, _ in pipe.command_stack])
                return await real_pipe_execute(*args, **kwargs)

            pipe.execute = execute
            return pipe

        async def execute_command(*args: Any, **kwargs: Any) -> Any:
            self.commands.append(args)
            return await real_command(*args, **kwargs)

        async def wire_execute(w: Any, commands: Any, **options: Any) -> Any:
            self.pipelines.append([tuple(command) for command in commands])
            return await real_execute(w, commands, **options)

        async def wire_call(w: Any, *command: Any) -> Any:
            self.commands.append(command)
            return await real_call(w, *command)

        monkeypatch.setattr(AbstractConnection, "send_packed_command", send_packed_command)
        monkeypatch.setattr(wire._Link, "send", link_send)
        monkeypatch.setattr(wire.Wire, "execute", wire_execute)
        monkeypatch.setattr(wire.Wire, "call", wire_call)
        monkeypatch.setattr(client, "pipeline", pipeline)
        monkeypatch.setattr(client, "execute_command", execute_command)
