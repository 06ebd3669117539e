"""Progress: a handler's ``current_job().set_progress(value, message)`` is stored with the
job's record, and any App on the broker reads it as ``JobInfo.progress`` while the job runs
and after it finished."""

from __future__ import annotations

import anyio
import pytest

import asyncq
from asyncq import current_job
from asyncq.backend import Outcome
from asyncq.testing import Broker, SettleLog

pytestmark = [pytest.mark.anyio, pytest.mark.needs_store]


async def test_progress_set_in_a_handler_is_read_by_another_app_while_it_runs(
    broker: Broker, settled: SettleLog, app: asyncq.App
) -> None:
    halfway, go_on = anyio.Event(), anyio.Event()

    @app.task
    async def resize(images: int) -> int:
        job = current_job()
        await job.set_progress(0.4, f"resized 4 of {images}")
        halfway.set()
        await go_on.wait()
        await job.set_progress(1.0)
        return images

    reader = broker.app()  # its own connections, as another process would have
    async with app, reader:
        job = await resize.enqueue(10)
        assert (await job.info()).progress is None  # nothing reported yet
        seen = reader.get_job(job.id, job.queue)
        async with app.worker(concurrency=1):
            with anyio.fail_after(5):
                await halfway.wait()
            running = await seen.info()
            go_on.set()
            assert await settled.wait(job.id) == [Outcome.SUCCEEDED]
        finished = await seen.info()
    assert running.status is asyncq.JobStatus.RUNNING
    assert running.progress == asyncq.Progress(0.4, "resized 4 of 10")
    assert finished.progress == asyncq.Progress(1.0, None)
    assert finished.result == 10
