"""What each asyncio Redis client costs per command on asyncq's hot commands.

    .venv-clients-redis8/bin/python benchmarks/redis_clients.py            # every candidate
    .venv-clients-redis8/bin/python benchmarks/redis_clients.py --only redis8,thin -n 2000
    .venv-clients-redis8/bin/python benchmarks/redis_clients.py --blocking-check
    .venv-clients-redis8/bin/python benchmarks/redis_clients.py --imports

Each candidate lives in a virtualenv of its own, ``.venv-clients-<name>`` at the top of the
repository (see benchmarks/README.md for how to make them). The driver runs every
candidate's interpreter on this same script with ``--child <client>``, one at a time; the
child prints its results as JSON, and the driver prints one table, each figure also as a
ratio to redis-py 8.1.0 + hiredis on a ``BlockingConnectionPool`` (what asyncq uses today,
``backends/asyncq_redis/connection.py``: its connections encode commands with
``hiredis.pack_command``, and so do the redis-py candidates here, except the ``pypack``
one).

The workloads, each run ``--repeat`` times (3) after a warm-up, the median reported:

W1  PING, one at a time;
W2  EVALSHA of a small Lua script (an XADD and an HSET, two keys and three arguments, like
    a job's enqueue), one at a time;
W3  pipelines of 100 such EVALSHA calls, one round trip each;
W4  100 concurrent tasks, each doing EVALSHA one at a time (``asyncio.gather``).

For each: commands per second and the client's CPU time per command
(``time.process_time()`` over the run, divided by the commands; every thread of the child
counts, so valkey-glide's Rust threads do too). The CPU figure is the one to trust on a
noisy machine: Redis runs on the same cores.

``thin`` is a minimal ``asyncio.Protocol`` written here and nowhere else: it writes
``hiredis.pack_command(...)`` and parses replies with ``hiredis.Reader``, nothing more (no
pool, no retries, no timeouts; one connection, replies matched to requests in order). It is
the floor for a client in Python, for the hot commands: EVALSHA and XREADGROUP.

Uses Redis at 127.0.0.1:6379, database 13, keys under ``clients-bench:`` only, which the
driver deletes before and after (never FLUSHALL/FLUSHDB).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import hiredis

HOST = "127.0.0.1"
PORT = 6379
DB = 13
PREFIX = "clients-bench:"
STREAM = PREFIX + "stream"
GROUP = "bench"
ROOT = Path(__file__).resolve().parent.parent

ENQUEUE_LUA = """
local entry = redis.call('XADD', KEYS[1], 'MAXLEN', '~', 10000, '*', 'id', ARGV[1], 'body', ARGV[2])
redis.call('HSET', KEYS[2], 'status', 'queued', 'entry', entry, 'updated', ARGV[3])
return entry
"""
ENQUEUE_SHA = hashlib.sha1(ENQUEUE_LUA.encode()).hexdigest()
BODY = b'{"task":"bench.noop","args":[1,2,3],"kwargs":{"x":"' + b"y" * 64 + b'"}}'
# The keys and arguments of the EVALSHA calls, made once: (stream, job key, id, body, now).
CALLS = [
    (STREAM, f"{PREFIX}job:{i}", f"job-{i:08d}", BODY, "1796218066.123456") for i in range(256)
]

BASELINE = "redis-py 8.1.0 blocking"
WORKLOADS = ("ping", "evalsha", "pipeline", "concurrent")
TITLES = {
    "ping": "W1 PING",
    "evalsha": "W2 EVALSHA",
    "pipeline": "W3 pipeline x100",
    "concurrent": "W4 100 tasks",
}

# (row, virtualenv suffix, child client); a row's version is what its child reports.
CANDIDATES = [
    ("redis5-pool", "redis5", "redis-py:pool"),
    ("redis5-blocking", "redis5", "redis-py:blocking"),
    ("redis6-pool", "redis6", "redis-py:pool"),
    ("redis6-blocking", "redis6", "redis-py:blocking"),
    ("redis7-pool", "redis7", "redis-py:pool"),
    ("redis7-blocking", "redis7", "redis-py:blocking"),
    ("redis8-pool", "redis8", "redis-py:pool"),
    ("redis8-blocking", "redis8", "redis-py:blocking"),
    ("redis8-blocking-pypack", "redis8", "redis-py:blocking:pypack"),
    ("coredis", "coredis", "coredis"),
    ("glide", "glide", "glide"),
    ("thin", "redis8", "thin"),
]


# --- the thin protocol layer -------------------------------------------------------------


class ThinProtocol(asyncio.Protocol):
    """One connection: commands written as ``hiredis.pack_command`` makes them, replies
    parsed by ``hiredis.Reader`` and handed to the waiting futures in order.

    A caller that stops waiting (cancelled, timed out) leaves its future in the queue, and
    the reply that comes for it later is dropped: the replies stay matched to the requests.
    """

    _NOT_YET = object()

    def __init__(self) -> None:
        self._reader = hiredis.Reader(notEnoughData=self._NOT_YET)
        self._waiting: collections.deque[asyncio.Future[Any]] = collections.deque()
        self._transport: asyncio.Transport | None = None
        self._lost: BaseException | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        reader.feed(data)
        waiting = self._waiting
        while (reply := reader.gets()) is not self._NOT_YET:
            future = waiting.popleft()
            if future.done():
                continue
            if isinstance(reply, hiredis.ReplyError):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = exc or ConnectionError("connection closed")
        while self._waiting:
            future = self._waiting.popleft()
            if not future.done():
                future.set_exception(ConnectionError(str(self._lost)))

    def execute(self, *args: Any) -> asyncio.Future[Any]:
        """Send one command; the future gets its reply."""
        if self._lost is not None or self._transport is None:
            raise ConnectionError(f"not connected: {self._lost}")
        future = asyncio.get_running_loop().create_future()
        self._transport.write(hiredis.pack_command(args))
        self._waiting.append(future)
        return future

    def execute_many(self, commands: Sequence[Sequence[Any]]) -> list[asyncio.Future[Any]]:
        """Send commands in one write (a pipeline); one future per reply."""
        if self._lost is not None or self._transport is None:
            raise ConnectionError(f"not connected: {self._lost}")
        loop = asyncio.get_running_loop()
        self._transport.write(b"".join([hiredis.pack_command(tuple(c)) for c in commands]))
        futures = [loop.create_future() for _ in commands]
        self._waiting.extend(futures)
        return futures

    def evalsha(self, sha: str, keys: Sequence[Any], args: Sequence[Any]) -> Awaitable[Any]:
        return self.execute("EVALSHA", sha, len(keys), *keys, *args)

    def xreadgroup(
        self,
        group: str,
        consumer: str,
        streams: dict[str, str],
        *,
        count: int,
        block_ms: int | None = None,
    ) -> Awaitable[Any]:
        """A blocking read on this connection: nothing else can be answered on it meanwhile,
        so a worker gives it a connection of its own. No timeout but the caller's own."""
        args: list[Any] = ["XREADGROUP", "GROUP", group, consumer, "COUNT", count]
        if block_ms is not None:
            args += ["BLOCK", block_ms]
        args += ["STREAMS", *streams, *streams.values()]
        return self.execute(*args)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


async def thin_connect(host: str = HOST, port: int = PORT, db: int = DB) -> ThinProtocol:
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_connection(ThinProtocol, host, port)
    if db:
        await protocol.execute("SELECT", db)
    return protocol


# --- the candidates, as adapters ---------------------------------------------------------


class Adapter:
    """One client, set up for the workloads."""

    name = ""
    versions: dict[str, str]
    notes: str = ""

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def ping(self) -> Any: ...
    async def evalsha(self, i: int) -> Any: ...
    async def pipeline(self, start: int, n: int) -> list[Any]: ...


class RedisPy(Adapter):
    def __init__(self, pool_kind: str, pack: str) -> None:
        import redis
        import redis.asyncio as aioredis
        from redis.asyncio.connection import Connection

        class HiredisConnection(Connection):  # as backends/asyncq_redis/connection.py
            def pack_command(self, *args: Any) -> list[bytes]:
                return [hiredis.pack_command(args)]

        self._aioredis = aioredis
        self._connection_class = HiredisConnection if pack == "hiredis" else Connection
        self._pool_kind = pool_kind
        self.versions = {"redis": redis.__version__, "hiredis": hiredis.__version__}
        self.notes = f"{pool_kind} pool, {pack} packer"

    async def open(self) -> None:
        aioredis = self._aioredis
        common: dict[str, Any] = {
            "host": HOST,
            "port": PORT,
            "db": DB,
            "connection_class": self._connection_class,
            "socket_timeout": 30.0,
        }
        if self._pool_kind == "blocking":
            # asyncq's default max_connections; a burst beyond it waits for a connection.
            pool = aioredis.BlockingConnectionPool(max_connections=64, timeout=30, **common)
        else:
            pool = aioredis.ConnectionPool(**common)  # unbounded
        self.client = aioredis.Redis(connection_pool=pool)
        from redis.asyncio.connection import DefaultParser

        self.versions["parser"] = DefaultParser.__name__

    async def close(self) -> None:
        await self.client.aclose() if hasattr(self.client, "aclose") else await self.client.close()
        await self.client.connection_pool.disconnect()

    async def ping(self) -> Any:
        return await self.client.ping()

    async def evalsha(self, i: int) -> Any:
        s, k, a, b, c = CALLS[i & 255]
        return await self.client.evalsha(ENQUEUE_SHA, 2, s, k, a, b, c)

    async def pipeline(self, start: int, n: int) -> list[Any]:
        async with self.client.pipeline(transaction=False) as pipe:
            for i in range(start, start + n):
                s, k, a, b, c = CALLS[i & 255]
                pipe.evalsha(ENQUEUE_SHA, 2, s, k, a, b, c)
            return await pipe.execute()


class Coredis(Adapter):
    def __init__(self) -> None:
        import coredis

        self._coredis = coredis
        self.versions = {"coredis": coredis.__version__, "hiredis": hiredis.__version__}
        self.notes = "default pool (RESP3), in its async context"

    async def open(self) -> None:
        self.client = self._coredis.Redis(HOST, PORT, DB, stream_timeout=30.0)
        self._context = self.client.__aenter__()
        await self._context

    async def close(self) -> None:
        await self.client.__aexit__(None, None, None)

    async def ping(self) -> Any:
        return await self.client.ping()

    async def evalsha(self, i: int) -> Any:
        s, k, a, b, c = CALLS[i & 255]
        return await self.client.evalsha(ENQUEUE_SHA, keys=(s, k), args=(a, b, c))

    async def pipeline(self, start: int, n: int) -> list[Any]:
        async with self.client.pipeline(transaction=False) as pipe:
            requests = []
            for i in range(start, start + n):
                s, k, a, b, c = CALLS[i & 255]
                requests.append(pipe.evalsha(ENQUEUE_SHA, keys=(s, k), args=(a, b, c)))
        return [await r for r in requests]


class Glide(Adapter):
    def __init__(self) -> None:
        from importlib.metadata import version

        import glide

        self._glide = glide
        self.versions = {"valkey-glide": version("valkey-glide")}
        self.notes = "one multiplexed connection; EVALSHA via invoke_script, pipelines as Batch"

    async def open(self) -> None:
        glide = self._glide
        config = glide.GlideClientConfiguration(
            [glide.NodeAddress(HOST, PORT)], database_id=DB, request_timeout=30_000
        )
        self.client = await glide.GlideClient.create(config)
        self._script = glide.Script(ENQUEUE_LUA)
        assert self._script.get_hash() == ENQUEUE_SHA

    async def close(self) -> None:
        await self.client.close()

    async def ping(self) -> Any:
        return await self.client.ping()

    async def evalsha(self, i: int) -> Any:
        s, k, a, b, c = CALLS[i & 255]
        return await self.client.invoke_script(self._script, keys=[s, k], args=[a, b, c])

    async def pipeline(self, start: int, n: int) -> list[Any]:
        batch = self._glide.Batch(is_atomic=False)
        for i in range(start, start + n):
            s, k, a, b, c = CALLS[i & 255]
            batch.custom_command(["EVALSHA", ENQUEUE_SHA, "2", s, k, a, b, c])
        result = await self.client.exec(batch, raise_on_error=True)
        assert result is not None
        return result


class Thin(Adapter):
    def __init__(self) -> None:
        self.versions = {"hiredis": hiredis.__version__}
        self.notes = "one connection, replies matched in order (this script's ThinProtocol)"

    async def open(self) -> None:
        self.protocol = await thin_connect()

    async def close(self) -> None:
        self.protocol.close()

    async def ping(self) -> Any:
        return await self.protocol.execute("PING")

    async def evalsha(self, i: int) -> Any:
        s, k, a, b, c = CALLS[i & 255]
        return await self.protocol.execute("EVALSHA", ENQUEUE_SHA, 2, s, k, a, b, c)

    async def pipeline(self, start: int, n: int) -> list[Any]:
        commands = []
        for i in range(start, start + n):
            s, k, a, b, c = CALLS[i & 255]
            commands.append(("EVALSHA", ENQUEUE_SHA, 2, s, k, a, b, c))
        return list(await asyncio.gather(*self.protocol.execute_many(commands)))


def make_adapter(client: str) -> Adapter:
    if client.startswith("redis-py:"):
        parts = client.split(":")
        return RedisPy(parts[1], parts[2] if len(parts) > 2 else "hiredis")
    if client == "coredis":
        return Coredis()
    if client == "glide":
        return Glide()
    if client == "thin":
        return Thin()
    raise SystemExit(f"unknown client {client!r}")


# --- the child: the workloads ------------------------------------------------------------


async def measure(body: Callable[[int], Awaitable[Any]], commands: int) -> dict[str, float]:
    gc.collect()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    await body(commands)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return {"ops": commands / wall, "cpu_us": cpu / commands * 1e6}


async def run_child(client: str, n: int, repeat: int, tasks: int, batch: int) -> dict[str, Any]:
    adapter = make_adapter(client)
    await adapter.open()
    try:
        # A sanity check that each reply comes back as the script's entry id.
        entry = await adapter.evalsha(0)
        assert isinstance(entry, bytes) and b"-" in entry, entry
        assert (await adapter.pipeline(0, 3))[2].count(b"-") == 1

        async def ping(count: int) -> None:
            for _ in range(count):
                await adapter.ping()

        async def one_at_a_time(count: int) -> None:
            for i in range(count):
                await adapter.evalsha(i)

        async def pipelines(count: int) -> None:
            for r in range(max(count // batch, 1)):
                await adapter.pipeline(r * batch, batch)

        async def concurrent(count: int) -> None:
            async def caller(t: int) -> None:
                for i in range(max(count // tasks, 1)):
                    await adapter.evalsha(t + i)

            await asyncio.gather(*(caller(t) for t in range(tasks)))

        bodies = {
            "ping": (ping, n),
            "evalsha": (one_at_a_time, n),
            "pipeline": (pipelines, max(n // batch, 1) * batch),
            "concurrent": (concurrent, max(n // tasks, 1) * tasks),
        }
        results: dict[str, Any] = {}
        for name, (body, commands) in bodies.items():
            await body(commands // 4)  # warm-up: the pool's connections made, code paths hot
            runs = [await measure(body, commands) for _ in range(repeat)]
            results[name] = {
                "ops": statistics.median(r["ops"] for r in runs),
                "cpu_us": statistics.median(r["cpu_us"] for r in runs),
                "runs": runs,
                "commands": commands,
            }
    finally:
        await adapter.close()
    return {"client": client, "versions": adapter.versions, "notes": adapter.notes, **results}


# --- the child: import cost, and redis-py's blocking XREADGROUP --------------------------


IMPORT_PROBE = """
import json, sys, time
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
before, rss0 = set(sys.modules), rss()
t0 = time.perf_counter()
__import__(sys.argv[1])
ms = (time.perf_counter() - t0) * 1e3
new = set(sys.modules) - before
print(json.dumps({
    "ms": ms, "rss_kib": rss() - rss0, "modules": len(new),
    "opentelemetry": sorted(m for m in new if m.startswith("opentelemetry"))[:5],
    "observability": sorted(m for m in new if "observability" in m)[:3],
}))
"""


def import_probe(python: Path, module: str) -> tuple[Any, str]:
    """What importing ``module`` costs a fresh interpreter of ``python`` (``-c``, so
    nothing of this script is imported first): milliseconds and resident memory."""
    proc = subprocess.run(
        [str(python), "-c", IMPORT_PROBE, module], capture_output=True, text=True, timeout=60
    )
    if proc.returncode != 0:
        return None, (proc.stderr.strip().splitlines() or ["?"])[-1]
    return json.loads(proc.stdout), ""


async def blocking_check(block_ms: int) -> dict[str, Any]:
    """A long XREADGROUP BLOCK through a redis-py client left at its defaults, and through
    one with ``socket_timeout=None``: does it come back empty after the block, or fail?"""
    import redis
    import redis.asyncio as aioredis

    stream = f"{PREFIX}block:{os.getpid()}"
    out: dict[str, Any] = {"redis": redis.__version__, "block_ms": block_ms}
    for label, kwargs in (("defaults", {}), ("socket_timeout=None", {"socket_timeout": None})):
        client = aioredis.Redis(host=HOST, port=PORT, db=DB, **kwargs)
        try:
            await client.xgroup_create(stream, GROUP, id="$", mkstream=True)
        except redis.ResponseError:
            pass
        pool = client.connection_pool
        conn = pool.connection_class(**pool.connection_kwargs)
        retry = getattr(conn, "retry", None)
        result: dict[str, Any] = {
            "socket_timeout": conn.socket_timeout,
            "retries": getattr(retry, "_retries", None),
            "retry_errors": sorted(e.__name__ for e in getattr(retry, "_supported_errors", ())),
        }
        t0 = time.perf_counter()
        try:
            reply = await asyncio.wait_for(
                client.xreadgroup(GROUP, "c", {stream: ">"}, count=1, block=block_ms),
                timeout=max(block_ms / 1000 * 2, 110),  # beyond that: "still retrying"
            )
            result["outcome"] = f"returned {reply!r}"
        except Exception as exc:  # what a worker would see
            if type(exc) is TimeoutError and not exc.args:  # wait_for's deadline
                result["outcome"] = "no reply yet (redis-py still retrying)"
            else:
                result["outcome"] = f"{type(exc).__module__}.{type(exc).__name__}: {exc}"
        result["seconds"] = round(time.perf_counter() - t0, 2)
        out[label] = result
        await client.delete(stream)
        await client.aclose() if hasattr(client, "aclose") else await client.close()
    return out


# --- the driver ----------------------------------------------------------------------------


async def prepare(delete_only: bool = False) -> None:
    """Delete this benchmark's keys (SCAN + DEL under the prefix); load the script."""
    protocol = await thin_connect()
    try:
        cursor = b"0"
        while True:
            cursor, keys = await protocol.execute(
                "SCAN", cursor, "MATCH", PREFIX + "*", "COUNT", 1000
            )
            if keys:
                await protocol.execute("DEL", *keys)
            if cursor == b"0":
                break
        if not delete_only:
            sha = await protocol.execute("SCRIPT", "LOAD", ENQUEUE_LUA)
            assert sha.decode() == ENQUEUE_SHA
    finally:
        protocol.close()


def venv_python(suffix: str) -> Path:
    return ROOT / f".venv-clients-{suffix}" / "bin" / "python"


def spawn(python: Path, args: Sequence[str], timeout: float) -> tuple[Any, str]:
    """Run this script under ``python``; its last stdout line parsed as JSON."""
    cmd = [str(python), str(Path(__file__).resolve()), *args]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, f"timed out after {timeout:.0f} s"
    if proc.returncode != 0 or not proc.stdout.strip():
        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        return None, f"exit {proc.returncode}: {tail}"
    return json.loads(proc.stdout.strip().splitlines()[-1]), ""


def row_label(result: dict[str, Any], row: str) -> str:
    v = result["versions"]
    if "redis" in v:
        kind = result["client"].split(":")[1]
        extra = " pypack" if result["client"].endswith(":pypack") else ""
        return f"redis-py {v['redis']} {kind}{extra}"
    if "coredis" in v:
        return f"coredis {v['coredis']}"
    if "valkey-glide" in v:
        return f"valkey-glide {v['valkey-glide']}"
    return f"thin (hiredis {v['hiredis']})" if row == "thin" else row


def print_table(rows: list[tuple[str, dict[str, Any]]], failed: list[tuple[str, str]]) -> None:
    base = dict(rows).get(BASELINE)
    width = max([len(label) for label, _ in rows] + [len(BASELINE), 10])
    head1 = " " * width + "".join(f" | {TITLES[w]:^24}" for w in WORKLOADS)
    head2 = f"{'client':<{width}}" + " | ops/s    CPU µs  ×CPU" * len(WORKLOADS)
    print(head1)
    print(head2)
    print("-" * len(head2))
    for label, result in rows:
        cells = []
        for w in WORKLOADS:
            ops, cpu = result[w]["ops"], result[w]["cpu_us"]
            ratio = f"{cpu / base[w]['cpu_us']:5.2f}" if base else "  n/a"
            cells.append(f" | {ops:8,.0f} {cpu:6.1f} {ratio}")
        print(f"{label:<{width}}" + "".join(cells))
    if base:
        print()
        print(f"×CPU: CPU µs per command against {BASELINE} (lower is cheaper).")
        print("ops/s against the same baseline:")
        for label, result in rows:
            ratios = "  ".join(f"{result[w]['ops'] / base[w]['ops']:5.2f}" for w in WORKLOADS)
            print(f"  {label:<{width}}  {ratios}")
    for row, why in failed:
        print(f"FAILED {row}: {why}")


def run_driver(args: argparse.Namespace) -> None:
    only = set(args.only.split(",")) if args.only else None
    asyncio.run(prepare())
    rows: list[tuple[str, dict[str, Any]]] = []
    failed: list[tuple[str, str]] = []
    child_args = ["-n", str(args.n), "--repeat", str(args.repeat)]
    child_args += ["--tasks", str(args.tasks), "--batch", str(args.batch)]
    try:
        for row, suffix, client in CANDIDATES:
            if only and row not in only and suffix not in only:
                continue
            python = venv_python(suffix)
            if not python.exists():
                failed.append((row, f"no virtualenv at {python.parent.parent}"))
                continue
            print(f"running {row} ...", file=sys.stderr, flush=True)
            result, why = spawn(python, ["--child", client, *child_args], timeout=300)
            if result is None:
                failed.append((row, why))
                continue
            rows.append((row_label(result, row), result))
    finally:
        asyncio.run(prepare(delete_only=True))
    print(
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"n={args.n}, median of {args.repeat}"
    )
    print_table(rows, failed)
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "failed": failed}, indent=1))


def run_merge(paths: Sequence[str]) -> None:
    """One table from several invocations' ``--json`` files: per row and workload, the
    median of the invocations' medians (so a burst of noise on the machine during one
    invocation moves a row less)."""
    runs = [json.loads(Path(p).read_text()) for p in paths]
    merged: dict[str, dict[str, Any]] = {}
    for run in runs:
        for label, result in run["rows"]:
            row = merged.setdefault(label, {w: {"ops": [], "cpu_us": []} for w in WORKLOADS})
            for w in WORKLOADS:
                row[w]["ops"].append(result[w]["ops"])
                row[w]["cpu_us"].append(result[w]["cpu_us"])
    rows = [
        (label, {w: {k: statistics.median(v[w][k]) for k in ("ops", "cpu_us")} for w in WORKLOADS})
        for label, v in merged.items()
    ]
    print(f"median of {len(runs)} invocations: {', '.join(paths)}")
    failed = [tuple(f) for run in runs for f in run["failed"]]
    print_table(rows, failed)  # type: ignore[arg-type]


def run_imports(args: argparse.Namespace) -> None:
    """Import cost per virtualenv: ``--import-repeat`` fresh interpreters each, median."""
    probes = [
        ("redis5", "redis.asyncio"),
        ("redis6", "redis.asyncio"),
        ("redis7", "redis.asyncio"),
        ("redis8", "redis.asyncio"),
        ("coredis", "coredis"),
        ("glide", "glide"),
        ("redis8", "hiredis"),
    ]
    print(f"{'venv':<9} {'module':<14} {'ms':>7} {'RSS KiB':>8} {'modules':>8}  notes")
    for suffix, module in probes:
        python = venv_python(suffix)
        if not python.exists():
            print(f"{suffix:<9} {module:<14} (no virtualenv)")
            continue
        runs = []
        for _ in range(args.import_repeat):
            result, why = import_probe(python, module)
            if result is None:
                print(f"{suffix:<9} {module:<14} failed: {why}")
                break
            runs.append(result)
        if not runs:
            continue
        ms = statistics.median(r["ms"] for r in runs)
        rss = statistics.median(r["rss_kib"] for r in runs)
        notes = []
        if runs[0]["opentelemetry"]:
            notes.append("pulls " + ", ".join(runs[0]["opentelemetry"]))
        if runs[0]["observability"]:
            notes.append("imports " + ", ".join(runs[0]["observability"]))
        print(
            f"{suffix:<9} {module:<14} {ms:7.1f} {rss:8,.0f} {runs[0]['modules']:8}  "
            + "; ".join(notes)
        )


def run_blocking_checks(args: argparse.Namespace) -> None:
    """Every redis-py virtualenv at once (they mostly wait on the server)."""
    asyncio.run(prepare(delete_only=True))
    procs = {}
    only = set(args.only.split(",")) if args.only else None
    for suffix in ("redis5", "redis6", "redis7", "redis8"):
        if only and suffix not in only:
            continue
        python = venv_python(suffix)
        if python.exists():
            cmd = [str(python), str(Path(__file__).resolve()), "--blocking-child"]
            cmd += [str(args.block_ms)]
            procs[suffix] = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    for suffix, proc in procs.items():
        out, _ = proc.communicate(timeout=max(args.block_ms / 1000 * 4, 220) + 30)
        result = json.loads(out.strip().splitlines()[-1]) if out.strip() else None
        if result is None:
            print(f"{suffix}: failed (exit {proc.returncode})")
            continue
        print(f"redis-py {result['redis']}, XREADGROUP BLOCK {result['block_ms']} ms:")
        for label in ("defaults", "socket_timeout=None"):
            r = result[label]
            print(
                f"  {label:<20} socket_timeout={r['socket_timeout']!r}, retries={r['retries']}"
                f" on {','.join(r['retry_errors']) or '-'}: {r['outcome']} after {r['seconds']} s"
            )
    asyncio.run(prepare(delete_only=True))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=3000, help="commands per run (3000)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per workload (3)")
    parser.add_argument("--tasks", type=int, default=100, help="W4's concurrent tasks (100)")
    parser.add_argument("--batch", type=int, default=100, help="W3's commands per pipeline")
    parser.add_argument("--only", help="rows or virtualenv names, comma-separated")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--imports", action="store_true", help="import cost per virtualenv")
    parser.add_argument("--import-repeat", type=int, default=5)
    parser.add_argument("--blocking-check", action="store_true", help="redis-py long BLOCK")
    parser.add_argument("--block-ms", type=int, default=7000)
    parser.add_argument("--merge", nargs="+", metavar="JSON", help="one table from --json files")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--blocking-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.blocking_child:
        print(json.dumps(asyncio.run(blocking_check(args.blocking_child))))
    elif args.child:
        result = asyncio.run(run_child(args.child, args.n, args.repeat, args.tasks, args.batch))
        print(json.dumps(result))
    elif args.merge:
        run_merge(args.merge)
    elif args.imports:
        run_imports(args)
    elif args.blocking_check:
        run_blocking_checks(args)
    else:
        run_driver(args)


if __name__ == "__main__":
    main()
