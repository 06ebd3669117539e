"""``JobStore.job_body``: a waiting, delayed or running job's body as it was encoded (what the
dashboard shows as its arguments); None once it finished, and for a job nobody knows."""

from __future__ import annotations

import anyio
import pytest

import asyncq
from asyncq.serializer import Message

pytestmark = [pytest.mark.anyio, pytest.mark.needs_store, pytest.mark.needs_bodies]


async def test_a_jobs_body_while_it_waits_and_runs_and_none_after(app: asyncq.App) -> None:
    started, release = anyio.Event(), anyio.Event()

    @app.task
    async def ship(order: str, *, express: bool = False) -> None:
        started.set()
        await release.wait()

    async with app:
        store = app.backend.store
        queued = await ship.enqueue("o-1", express=True)
        later = await ship.options(delay=3600, priority=3).enqueue("o-2")
        for job, args in ((queued, ["o-1"]), (later, ["o-2"])):
            body = await store.job_body(job.id, app.default_queue)
            assert body is not None
            message = Message.decode(body, app.serializer)
            assert (message.id, message.task, list(message.args)) == (job.id, ship.name, args)
        assert Message.decode(
            await store.job_body(queued.id, app.default_queue) or b"", app.serializer
        ).kwargs == {"express": True}
        async with app.worker(concurrency=1):
            with anyio.fail_after(5):
                await started.wait()
            running = await store.job_body(queued.id, app.default_queue)
            assert running is not None and Message.decode(running, app.serializer).id == queued.id
            release.set()
            await queued.result(timeout=5)
        assert await store.job_body(queued.id, app.default_queue) is None
        assert await store.job_body("0" * 32, app.default_queue) is None
