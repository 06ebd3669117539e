"""The worker's settlements through an outage: a finished job stays the worker's (its lease
renewed) until its settlement lands, and once the broker answers again the settlements
waiting out a backoff go at once, with whatever finished meanwhile."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import anyio
import pytest

import asyncq
from asyncq.backend import Delivery, Settlement

pytestmark = pytest.mark.anyio

VISIBILITY_TIMEOUT = 1.0
"""Renewals every third of it: the worker's first sign that the broker is back."""


async def test_settlements_go_as_soon_as_the_broker_is_back(
    unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = asyncq.App(f"memory://{unique}?visibility_timeout={VISIBILITY_TIMEOUT}")
    backend = app.backend
    fetch, settle, renew = backend.fetch, backend.settle, backend.renew
    down = False
    refused = anyio.Event()
    landed: dict[str, float] = {}
    landed_changed = anyio.Event()

    def check_up() -> None:
        if down:
            refused.set()
            raise asyncq.BrokerUnavailable("the test's outage")

    # The real backend behind a switch: while "down" every round trip fails, as when the
    # server is away; the backend itself does the work the rest of the time.
    async def fetch_through(queues: Sequence[str], limit: int, *, timeout: float | None) -> Any:
        check_up()
        return await fetch(queues, limit, timeout=timeout)

    async def settle_through(settlements: Sequence[Settlement]) -> None:
        nonlocal landed_changed
        check_up()
        await settle(settlements)
        landed.update((s.delivery.id, time.monotonic()) for s in settlements)
        landed_changed.set()
        landed_changed = anyio.Event()

    async def renew_through(deliveries: Sequence[Delivery]) -> None:
        check_up()
        await renew(deliveries)

    monkeypatch.setattr(backend, "fetch", fetch_through)
    monkeypatch.setattr(backend, "settle", settle_through)
    monkeypatch.setattr(backend, "renew", renew_through)
    started, release = anyio.Event(), anyio.Event()

    @app.task
    async def work(hold: bool) -> None:
        if hold:
            started.set()
            await release.wait()

    async def settled(job_id: str, timeout: float) -> float:
        with anyio.fail_after(timeout):
            while job_id not in landed:
                await landed_changed.wait()
        return landed[job_id]

    async with app, app.worker(concurrency=2):
        first = await work.enqueue(True)
        with anyio.fail_after(5):
            await started.wait()
        down = True
        release.set()  # it finishes during the outage: its settle fails, then backs off
        with anyio.fail_after(5):
            await refused.wait()
        # Past the settler's third try (0.4 + 0.8 + 1.6 s after the first failure): left to
        # its backoff, the next would come 6 s after the first.
        await anyio.sleep(3.0)
        down = False
        up_at = time.monotonic()
        second = await work.enqueue(False)
        first_at = await settled(first.id, timeout=10)
        second_at = await settled(second.id, timeout=10)
    # The first renewal after the outage (within a third of the lease) shows the broker is
    # back: the held settlement goes then, not at the end of its pause; and the job run
    # after the outage is not held behind it (the fetch loop retries every second).
    assert first_at - up_at < 1.0, first_at - up_at
    assert second_at - up_at < 2.0, second_at - up_at
