"""What a worker says about the persistence of the Redis it uses: one WARNING when nothing
is persisted (the shared test Redis runs so), an INFO line naming what a crash may lose
with AOF everysec, AOF fsync no or RDB snapshots only, nothing above DEBUG with AOF fsync
always, and no false warning (nor any failure) where CONFIG is renamed away, as managed
services do. Every server is real: the shared one, or a private redis-server started with
the settings under test."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest
import redis.asyncio as aioredis
import services
from asyncq_redis.persistence import Persistence, log_persistence, read_persistence
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

import asyncq

from .redis_support import PrivateRedis, free_port, redis_client, redis_url


@asynccontextmanager
async def private_redis(tmp_path: Path, *options: str) -> AsyncIterator[PrivateRedis]:
    """A redis-server of the test's own; ``options`` override PrivateRedis's AOF always."""
    server = PrivateRedis(services.require_redis_server(), tmp_path, *options)
    await server.start()
    try:
        yield server
    finally:
        await server.kill()


async def persistence_of(url: str) -> tuple[Persistence, ...]:
    """What the backend's own client (hiredis connections, asyncq's timeouts) reads."""
    async with asyncq.App(url) as app:
        return await read_persistence(redis_client(app))


def records(caplog: pytest.LogCaptureFixture, level: int) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "asyncq.redis" and r.levelno == level]


@pytest.mark.anyio
async def test_a_worker_on_the_shared_redis_warns_once_and_a_producer_never(
    prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="asyncq.redis")
    app = asyncq.App(redis_url(prefix))

    @app.task
    async def noop() -> None:
        pass

    async with app:  # a producer: connects and enqueues, never runs jobs
        await noop.enqueue()
    assert records(caplog, logging.WARNING) == []
    async with app.worker():
        pass
    (warning,) = records(caplog, logging.WARNING)
    message = warning.getMessage()
    assert message.startswith("Redis at redis://127.0.0.1:6379/15")
    for said in ("loses every queued job", "'appendonly yes'", "'appendfsync everysec'"):
        assert said in message
    assert "'Redis persistence'" in message


@pytest.mark.anyio
async def test_the_warning_names_the_server_without_its_password(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="asyncq.redis")
    options = ("--appendonly", "no", "--requirepass", "hunter2")
    async with private_redis(tmp_path, *options) as server:
        url = server.url.replace("redis://", "redis://:hunter2@") + "?prefix=tpersist"
        async with asyncq.App(url).worker():
            pass
    (warning,) = records(caplog, logging.WARNING)
    assert f"Redis at redis://:***@127.0.0.1:{server.port}/0" in warning.getMessage()
    assert "hunter2" not in caplog.text


@pytest.mark.anyio
async def test_aof_with_fsync_always_says_nothing_above_debug(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="asyncq.redis")
    async with private_redis(tmp_path) as server:  # --appendonly yes --appendfsync always
        found = await persistence_of(server.url)
        async with asyncq.App(server.url).worker():
            pass
    assert found == (
        Persistence(server=f"127.0.0.1:{server.port}", aof=True, appendfsync="always", save=()),
    )
    assert [r for r in caplog.records if r.levelno > logging.DEBUG] == []
    assert "appendfsync always" in records(caplog, logging.DEBUG)[-1].getMessage()


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("options", "loss"),
    [
        (("--appendfsync", "everysec"), "about the last second of writes"),
        (("--appendfsync", "no"), "about every 30 s on Linux"),
        (("--appendonly", "no", "--save", "3600 1 300 100"), "every write since the last snapshot"),
    ],
    ids=["aof-everysec", "aof-fsync-no", "rdb-only"],
)
async def test_a_crash_window_is_one_info_line_saying_what_may_be_lost(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, options: tuple[str, ...], loss: str
) -> None:
    caplog.set_level(logging.DEBUG, logger="asyncq.redis")
    async with private_redis(tmp_path, *options) as server:
        log_persistence(await persistence_of(server.url), server.url)
    assert records(caplog, logging.WARNING) == []
    (info,) = records(caplog, logging.INFO)
    assert loss in info.getMessage()


@pytest.mark.anyio
async def test_aof_everysec_is_read_from_the_config(tmp_path: Path) -> None:
    async with private_redis(tmp_path, "--appendfsync", "everysec") as server:
        (found,) = await persistence_of(server.url)
    assert (found.aof, found.appendfsync, found.save) == (True, "everysec", ())


@pytest.mark.anyio
async def test_rdb_save_points_are_read_as_seconds_and_changes(tmp_path: Path) -> None:
    options = ("--appendonly", "no", "--save", "3600 1 300 100")
    async with private_redis(tmp_path, *options) as server:
        (found,) = await persistence_of(server.url)
    assert (found.aof, found.save) == (False, ((3600, 1), (300, 100)))
    assert not found.persists_nothing


@pytest.mark.anyio
@pytest.mark.parametrize("aof", ["yes", "no"])
async def test_a_renamed_config_is_no_false_warning_and_no_failure(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, aof: str
) -> None:
    # Without CONFIG, INFO persistence still says whether the AOF is on, but not the save
    # points: with the AOF off, snapshots may or may not be taken, so nothing is claimed.
    caplog.set_level(logging.DEBUG, logger="asyncq.redis")
    options = ("--appendonly", aof, "--rename-command", "CONFIG", "")
    async with private_redis(tmp_path, *options) as server:
        (found,) = await persistence_of(server.url)
        app = asyncq.App(f"{server.url}?prefix=tpersist")

        @app.task
        async def double(n: int) -> int:
            return n * 2

        async with app.worker():
            with anyio.fail_after(10):  # the worker runs jobs after its check as usual
                assert await (await double.enqueue(21)).result(timeout=10) == 42
    assert (found.aof, found.appendfsync, found.save) == (aof == "yes", None, None)
    assert not found.persists_nothing
    assert [
        r for r in caplog.records if r.levelno > logging.DEBUG and r.name == "asyncq.redis"
    ] == []
    assert "CONFIG GET failed (unknown command" in caplog.text


@pytest.mark.anyio
async def test_a_server_that_answers_nothing_is_unknown_not_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Nothing listens on the port: every read fails, and the check says so at DEBUG only.
    caplog.set_level(logging.DEBUG, logger="asyncq.redis")
    # No retries: redis-py's default backoff would only make the same refusal take seconds.
    no_retry = Retry(NoBackoff(), retries=0)
    client = aioredis.Redis(host="127.0.0.1", port=free_port(), retry=no_retry)
    try:
        with anyio.fail_after(20):
            found = await read_persistence(client)
    finally:
        await client.aclose()
    assert [(p.aof, p.appendfsync, p.save) for p in found] == [(None, None, None)]
    log_persistence(found, "redis://127.0.0.1:1/0")
    assert [r for r in caplog.records if r.levelno > logging.DEBUG] == []
    assert "cannot be read" in records(caplog, logging.DEBUG)[-1].getMessage()
