"""Bad input: unserialisable arguments fail at enqueue and nothing is sent; a message that
cannot be decoded, names an unknown task, or does not fit the handler is dead-lettered with
that reason, and the worker keeps running."""

from __future__ import annotations

import time
from typing import Any

import pytest

import asyncq
from asyncq import JobStatus, current_job
from asyncq.backend import Envelope, Outcome
from asyncq.serializer import encode_job, new_job_id
from asyncq.testing import Broker, Recorded, SettleLog

pytestmark = pytest.mark.anyio


async def test_unserialisable_argument_is_a_type_error_and_nothing_is_queued(
    app: asyncq.App,
) -> None:
    @app.task
    async def store(value: object) -> None:
        pass

    async with app:
        with pytest.raises(TypeError, match="cannot be serialized"):
            await store.enqueue(object())
        with pytest.raises(TypeError):
            await store.enqueue_many([(1,), (object(),)])
        stats = (await app.queue_stats([app.default_queue]))[app.default_queue]
        assert (stats.pending, stats.scheduled, stats.running, stats.dead) == (0, 0, 0, 0)


async def test_a_job_larger_than_the_broker_accepts_is_refused_and_nothing_is_sent(
    broker: Broker,
) -> None:
    app = broker.app(max_message_size=4096)

    @app.task
    async def store(blob: str) -> None:
        pass

    async with app:
        assert app.backend.max_message_size == 4096
        with pytest.raises(
            asyncq.MessageTooLarge, match=r"the broker accepts at most 4,096 bytes"
        ) as e:
            await store.enqueue("x" * 5000)
        assert e.value.limit == 4096 and e.value.size > 5000
        with pytest.raises(asyncq.MessageTooLarge):
            await store.enqueue_many([("small",), ("x" * 5000,)])
        await store.enqueue("x" * 3000)  # what fits still goes
        stats = (await app.queue_stats([app.default_queue]))[app.default_queue]
    assert stats.pending == 1


async def test_undecodable_message_is_dead_lettered_and_the_worker_goes_on(
    app: asyncq.App, settled: SettleLog, recorded: Recorded
) -> None:
    @app.task
    async def fine() -> str:
        return "still working"

    garbage_id = new_job_id()
    async with app, app.worker(concurrency=1):
        await app.backend.enqueue(
            [Envelope(id=garbage_id, queue=app.default_queue, body=b"\x00not json")]
        )
        assert await settled.wait(garbage_id) == [Outcome.DEAD]
        job = await fine.enqueue()
        assert await settled.wait(job.id) == [Outcome.SUCCEEDED]
        await recorded.result(job, "still working")
        (dead,) = await app.dead_letters()
    assert dead.id == garbage_id
    assert dead.body == b"\x00not json"
    assert dead.error.type == "DecodeError"


async def test_unknown_task_is_dead_lettered(
    broker: Broker, app: asyncq.App, settled: SettleLog, recorded: Recorded
) -> None:
    # A producer with a task this worker's App does not have (an old or newer deploy).
    producer = broker.app()

    @producer.task(name="tasks.gone")
    async def gone() -> None:
        pass

    @app.task
    async def fine() -> str:
        return "still working"

    async with producer, app, app.worker(concurrency=1):
        job = await gone.enqueue()
        assert await settled.wait(job.id) == [Outcome.DEAD]
        await recorded.failed(app.get_job(job.id), match="tasks.gone")
        still = await fine.enqueue()
        assert await settled.wait(still.id) == [Outcome.SUCCEEDED]
        await recorded.result(still, "still working")
        (dead,) = await app.dead_letters()
    assert dead.id == job.id
    assert dead.task == "tasks.gone"
    assert dead.error.type == "UnknownTask"
    assert "tasks.gone" in dead.error.message


async def test_arguments_that_do_not_fit_are_a_type_error_at_enqueue_and_nothing_is_sent(
    app: asyncq.App,
) -> None:
    @app.task
    async def add(a: int, b: int) -> int:
        return a + b

    @app.task
    async def send(to: str, subject: str = "", *, cc: str | None = None) -> None:
        pass

    untyped: Any = add  # calls a type checker would refuse, as a caller without one makes
    async with app:
        with pytest.raises(TypeError, match=r"add\(a: int, b: int\).*too many"):
            await untyped.enqueue(1, 2, 3)
        with pytest.raises(TypeError, match="unexpected keyword argument 'c'"):
            await untyped.enqueue(1, 2, c=3)
        with pytest.raises(TypeError, match=r"options such as delay= go in task.options"):
            await untyped.enqueue(1, 2, delay=5)
        with pytest.raises(TypeError, match="missing a required argument: 'b'"):
            await untyped.options(delay=5).enqueue(1)
        with pytest.raises(TypeError, match="multiple values for argument 'a'"):
            await untyped.enqueue(1, a=2)
        with pytest.raises(TypeError, match="missing a required argument: 'to'"):
            await send.enqueue(cc="x")  # type: ignore[call-arg]
        with pytest.raises(TypeError, match="enqueue_many item 1: .*nothing was sent"):
            await add.enqueue_many([(1, 2), (1, 2, 3), (3, 4)])
        with pytest.raises(TypeError, match="enqueue_many item 0: .*'c'"):
            await add.enqueue_many([{"a": 1, "b": 2, "c": 3}])
        # What fits still goes: by position, by name, mixed, defaults and keyword-only.
        await add.enqueue(1, b=2)
        await send.enqueue("a@b.c", cc="d@e.f")
        await send.enqueue(to="a@b.c", subject="hi")
        await add.enqueue_many([(1, 2), {"a": 1, "b": 2}])
        stats = (await app.queue_stats([app.default_queue]))[app.default_queue]
    assert stats.pending == 5


@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_arguments_that_do_not_fit_are_dead_lettered_without_retry(
    app: asyncq.App, settled: SettleLog, recorded: Recorded, kind: str
) -> None:
    calls: list[int] = []

    if kind == "async":

        @app.task(name="add", retries=3)
        async def add_async(a: int, b: int) -> int:
            calls.append(current_job().attempt)
            return a + b

    else:

        @app.task(name="add", retries=3)
        def add_sync(a: int, b: int) -> int:
            calls.append(current_job().attempt)
            return a + b

    async with app, app.worker(concurrency=1):
        # Messages from a producer whose handler had other parameters (another deploy).
        bad, missing, good = (
            await foreign_job(app, "add", kwargs={"a": 1, "c": 2}),
            await foreign_job(app, "add", args=[1]),
            await foreign_job(app, "add", args=[1, 2]),
        )
        assert await settled.wait(good.id) == [Outcome.SUCCEEDED]
        await recorded.result(good, 3)
        for job in (bad, missing):
            assert await settled.wait(job.id) == [Outcome.DEAD]  # one delivery, no retry
            await recorded.failed(job)
            if info := await recorded.info(job):
                assert info.status is JobStatus.DEAD
                assert info.error is not None
                assert info.error.type == "BadArguments"
        dead = {d.id: d.error.type for d in await app.dead_letters()}
        assert dead == {bad.id: "BadArguments", missing.id: "BadArguments"}
    assert calls == [1]


async def foreign_job(
    app: asyncq.App,
    task: str,
    args: list[Any] | None = None,
    kwargs: dict[str, Any] | None = None,
) -> asyncq.Job[Any]:
    """Enqueue a message as another producer would, bypassing this App's checks."""
    job_id = new_job_id()
    body = encode_job(
        app.serializer,
        job_id,
        task,
        app.default_queue,
        args or [],
        kwargs or {},
        {},
        1,
        time.time(),
        None,
        None,
    )
    await app.backend.enqueue([Envelope(job_id, app.default_queue, body, task)])
    return app.get_job(job_id)


async def test_type_error_inside_the_handler_is_an_ordinary_failure(
    app: asyncq.App, settled: SettleLog, recorded: Recorded
) -> None:
    attempts: list[int] = []

    @app.task(retries=1)
    async def buggy(a: int) -> int:
        attempts.append(current_job().attempt)
        return a + "1"  # type: ignore[operator]  # the bug under test

    async with app, app.worker(concurrency=1):
        job = await buggy.enqueue(1)
        assert await settled.wait(job.id, 2) == [Outcome.RETRY, Outcome.DEAD]
        await recorded.failed(job)
        if info := await recorded.info(job):
            assert info.error is not None
            assert info.error.type == "TypeError"
        (dead,) = await app.dead_letters()
    assert attempts == [1, 2]
    assert (dead.id, dead.error.type) == (job.id, "TypeError")
