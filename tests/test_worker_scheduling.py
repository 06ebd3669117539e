"""The worker's order of work: jobs it fetched start before it sends the next fetch, so an
idle worker's job never waits behind that round trip."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import anyio
import pytest

import asyncq
from asyncq import current_job

pytestmark = pytest.mark.anyio


async def test_a_fetched_job_starts_before_the_next_fetch(
    unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = asyncq.App(f"memory://{unique}")
    events: list[tuple[str, Any]] = []
    fetch = app.backend.fetch

    async def logged_fetch(queues: Sequence[str], limit: int, *, timeout: float | None) -> Any:
        events.append(("fetch", limit))
        deliveries = await fetch(queues, limit, timeout=timeout)
        events.append(("fetched", [d.id for d in deliveries]))
        return deliveries

    monkeypatch.setattr(app.backend, "fetch", logged_fetch)
    done = anyio.Event()

    @app.task
    async def work() -> None:
        events.append(("start", current_job().id))
        done.set()

    async with app, app.worker(concurrency=4):
        job = await work.enqueue()
        with anyio.fail_after(5):
            await done.wait()
        await job.result(timeout=5)
    fetched = events.index(("fetched", [job.id]))
    assert events[fetched + 1] == ("start", job.id), events
