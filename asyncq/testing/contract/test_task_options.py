"""Options of one call and of one task: ``.options(retries=, timeout=)`` override the task's
for that job (and its retries); ``retry_on=`` / ``no_retry_on=`` choose which exceptions
are retried; ``store_result=False`` records a success without its value; ``result_ttl``
keeps one task's finished records for its own time."""

from __future__ import annotations

import anyio
import pytest

import asyncq
from asyncq import JobStatus, current_job
from asyncq.backend import Outcome
from asyncq.testing import Recorded, SettleLog

pytestmark = pytest.mark.anyio


def retried(retries: int) -> list[Outcome]:
    """The settlements of a job that fails every one of its ``retries + 1`` attempts."""
    return [Outcome.RETRY] * retries + [Outcome.DEAD]


async def test_per_call_retries_override_the_task_s(
    app: asyncq.App, settled: SettleLog, recorded: Recorded
) -> None:
    attempts: dict[str, list[int]] = {"fewer": [], "more": []}

    @app.task(retries=3)
    async def fails(name: str) -> None:
        attempts[name].append(current_job().attempt)
        raise ConnectionError("down")

    async with app, app.worker(concurrency=2):
        fewer = await fails.options(retries=0).enqueue("fewer")
        more = await fails.options(retries=5).enqueue("more")
        assert await settled.wait(fewer.id, 1, timeout=10) == retried(0)
        assert await settled.wait(more.id, 6, timeout=10) == retried(5)
        for job in (fewer, more):
            await recorded.failed(job, match="ConnectionError", timeout=10)
    assert attempts == {"fewer": [1], "more": [1, 2, 3, 4, 5, 6]}


async def test_per_call_timeout_overrides_the_task_s(
    app: asyncq.App, settled: SettleLog, recorded: Recorded
) -> None:
    cancelled: list[int] = []

    @app.task(retries=1, timeout=None)
    async def slow(seconds: float) -> str:
        try:
            await anyio.sleep(seconds)
        except anyio.get_cancelled_exc_class():
            cancelled.append(current_job().attempt)
            raise
        return "done"

    async with app, app.worker(concurrency=2):
        short = await slow.options(timeout=0.2).enqueue(30)
        fine = await slow.options(timeout=10).enqueue(0.01)
        assert await settled.wait(short.id, 2, timeout=10) == retried(1)
        await recorded.failed(short, match="timed out after 0.2 s", timeout=10)
        assert await settled.wait(fine.id, timeout=10) == [Outcome.SUCCEEDED]
        await recorded.result(fine, "done")
        (dead,) = await app.dead_letters()
    assert dead.id == short.id and "timed out after 0.2 s" in dead.error.message
    assert cancelled == [1, 2]  # both attempts had the per-call timeout, not "none"


@pytest.mark.parametrize(
    ("raised", "attempts"),
    [(ConnectionError, [1, 2, 3]), (ValueError, [1]), (KeyError, [1])],
)
async def test_retry_on_retries_only_those_exceptions(
    app: asyncq.App,
    settled: SettleLog,
    recorded: Recorded,
    raised: type[Exception],
    attempts: list[int],
) -> None:
    seen: list[int] = []

    @app.task(retries=2, retry_on=(ConnectionError, TimeoutError))
    async def call_api() -> None:
        seen.append(current_job().attempt)
        raise raised("no")

    async with app, app.worker(concurrency=1):
        job = await call_api.enqueue()
        outcomes = await settled.wait(job.id, len(attempts), timeout=10)
        await recorded.failed(job, match=raised.__name__, timeout=10)
        await recorded.status(job, JobStatus.DEAD)
        (dead,) = await app.dead_letters()
    assert outcomes == retried(len(attempts) - 1)
    assert dead.error.type == raised.__name__
    assert seen == attempts


async def test_no_retry_on_dead_letters_those_at_once(
    app: asyncq.App, settled: SettleLog, recorded: Recorded
) -> None:
    seen: dict[str, list[int]] = {"KeyError": [], "OSError": []}

    @app.task(retries=2, no_retry_on=KeyError)
    async def lookup(kind: str) -> None:
        seen[kind].append(current_job().attempt)
        raise KeyError("gone") if kind == "KeyError" else OSError("flaky")

    async with app, app.worker(concurrency=2):
        for kind, retries in (("KeyError", 0), ("OSError", 2)):
            job = await lookup.enqueue(kind)
            assert await settled.wait(job.id, retries + 1, timeout=10) == retried(retries)
            await recorded.failed(job, match=kind, timeout=10)
    assert seen == {"KeyError": [1], "OSError": [1, 2, 3]}


async def test_a_timeout_counts_as_timeout_error_for_retry_on(
    app: asyncq.App, settled: SettleLog, recorded: Recorded
) -> None:
    seen: list[int] = []

    @app.task(retries=2, timeout=0.1, retry_on=ConnectionError)
    async def hangs() -> None:
        seen.append(current_job().attempt)
        await anyio.sleep(30)

    async with app, app.worker(concurrency=1):
        job = await hangs.enqueue()
        assert await settled.wait(job.id, timeout=10) == retried(0)
        await recorded.failed(job, match="TimeoutError", timeout=10)
        (dead,) = await app.dead_letters()
    assert dead.error.type == "TimeoutError"
    assert seen == [1]


@pytest.mark.needs_store
async def test_store_result_false_records_the_success_without_its_value(
    app: asyncq.App,
) -> None:
    @app.task(store_result=False)
    async def big() -> str:
        return "x" * 10_000

    async with app, app.worker(concurrency=1):
        job = await big.enqueue()
        assert await job.result(timeout=10) is None
        info = await job.info()
    assert info.status is JobStatus.SUCCEEDED
    assert info.result is None and info.raw_result is None


@pytest.mark.needs_store
async def test_a_task_s_result_ttl_expires_its_records_on_its_own_time(
    app: asyncq.App,
) -> None:
    # A second: long enough for the waits below to see the records first on a broker that
    # polls (PostgreSQL through PgBouncer) on a busy machine.
    @app.task(result_ttl=1.0)
    async def brief() -> int:
        return 1

    @app.task(result_ttl=1.0)
    async def refused() -> None:
        raise asyncq.Reject("no")

    @app.task
    async def kept() -> int:
        return 2

    async with app, app.worker(concurrency=2):
        short, dead, long = await brief.enqueue(), await refused.enqueue(), await kept.enqueue()
        assert await short.result(timeout=10) == 1
        with pytest.raises(asyncq.JobFailed):
            await dead.result(timeout=10)
        assert await long.result(timeout=10) == 2
        # Expiry is the passing of time itself: nothing announces it, so look until it
        # happens, within a bound.
        with anyio.fail_after(10):
            for job in (short, dead):
                while True:
                    try:
                        await job.info()
                    except asyncq.JobNotFound:
                        break
                    await anyio.sleep(0.05)
        assert (await long.info()).result == 2


def test_bad_options_are_value_errors_naming_them(app: asyncq.App) -> None:
    @app.task
    async def noop() -> None:
        pass

    with pytest.raises(ValueError, match="retries must be an integer >= 0"):
        noop.options(retries=-1)
    with pytest.raises(ValueError, match="timeout must be a number of seconds > 0"):
        noop.options(timeout=0)
    with pytest.raises(ValueError, match="result_ttl must be a number of seconds > 0"):
        app.task(name="ttl0", result_ttl=0)(noop.fn)
    with pytest.raises(TypeError, match="retry_on takes exception classes"):
        app.task(name="bad_retry_on", retry_on=("ConnectionError",))(noop.fn)  # type: ignore[arg-type]
