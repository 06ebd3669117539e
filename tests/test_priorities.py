"""Priorities in the core: where a priority is checked, and a broker without priorities
refusing a task that has one when the App opens (the ordering itself is the contract
suite's, asyncq/testing/contract/test_priorities.py)."""

from __future__ import annotations

import pytest

import asyncq
from asyncq.errors import ConfigurationError
from asyncq.memory import MemoryBackend

pytestmark = pytest.mark.anyio


class Unordered(MemoryBackend):
    """A broker that cannot order jobs by priority."""

    supports_priorities = False
    no_priorities_hint = "this test's broker has none"


def test_a_task_s_priority_is_checked_where_it_is_declared(unique: str) -> None:
    app = asyncq.App(f"memory://{unique}")
    with pytest.raises(ValueError, match=r"^priority must be an integer from 0 to 9 .*not 12$"):

        @app.task(priority=12)
        async def urgent() -> None: ...

    @app.task(priority=9)
    async def fine() -> None: ...

    assert fine.priority == 9 and fine.options().options.priority is None
    assert fine.options(priority=0).options.priority == 0


async def test_a_broker_without_priorities_refuses_a_task_with_one_at_open(unique: str) -> None:
    app = asyncq.App(Unordered(unique))

    @app.task
    async def plain() -> None: ...

    async with app:  # no task has a priority: nothing to refuse
        await plain.enqueue()

    @app.task(priority=3)
    async def urgent() -> None: ...

    message = (
        r"task '.*urgent' has priority=3, but the broker at memory:// cannot order jobs by "
        r"priority: this test's broker has none"
    )
    with pytest.raises(ConfigurationError, match=message):
        async with app:
            pass
