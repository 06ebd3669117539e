"""``enqueue_many``: many jobs in one backend round trip; tuples are positional arguments,
mappings keyword arguments."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import pytest

import asyncq
from asyncq.backend import Envelope

pytestmark = [pytest.mark.anyio, pytest.mark.needs_store]


async def test_enqueue_many_is_one_round_trip_and_mixes_tuples_and_dicts(
    app: asyncq.App, monkeypatch: pytest.MonkeyPatch
) -> None:
    @app.task
    async def add(a: int, b: int = 0) -> int:
        return a + b

    # Count the calls reaching the real backend.
    batches: list[int] = []
    real_enqueue = app.backend.enqueue

    async def enqueue(envelopes: Sequence[Envelope]) -> list[str]:
        batches.append(len(envelopes))
        return await real_enqueue(envelopes)

    monkeypatch.setattr(app.backend, "enqueue", enqueue)

    async with app:
        jobs = await add.enqueue_many([(1, 2), {"a": 3, "b": 4}, (5,), {"a": 6}])
        assert batches == [4]
        assert len({job.id for job in jobs}) == 4
        assert await add.enqueue_many([]) == []
        assert batches == [4]
        async with app.worker(concurrency=4):
            assert [await job.result(timeout=5) for job in jobs] == [3, 7, 5, 6]


async def test_enqueue_many_with_options_and_a_bad_item(app: asyncq.App) -> None:
    @app.task
    async def echo(value: str) -> str:
        return value

    async with app:
        jobs = await echo.options(queue="elsewhere").enqueue_many([("a",), ("b",)])
        stats = await app.queue_stats(["elsewhere", app.default_queue])
        assert stats["elsewhere"].pending == 2
        assert stats[app.default_queue].pending == 0
        with pytest.raises(TypeError, match="tuples"):
            await echo.enqueue_many(cast(Any, [("c",), ["d"]]))
        # Nothing of the failed batch was sent.
        stats = await app.queue_stats(["elsewhere", app.default_queue])
        assert stats["elsewhere"].pending == 2
        assert stats[app.default_queue].pending == 0
        async with app.worker(concurrency=2, queues=["elsewhere"]):
            assert [await job.result(timeout=5) for job in jobs] == ["a", "b"]
