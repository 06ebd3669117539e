"""What an operator sees of real worker processes on Redis: see ``operations``."""

from __future__ import annotations

import operations
import pytest

pytestmark = pytest.mark.anyio


async def test_metrics_port_serves_queue_and_dead_letter_depths_and_logs_are_json(url: str) -> None:
    await operations.metrics_port_serves_depths_and_logs_are_json(url)


async def test_workers_shows_a_running_worker_then_shows_it_gone_once_killed(url: str) -> None:
    await operations.workers_shows_a_worker_then_shows_it_gone_once_killed(url)


async def test_a_killed_worker_is_listed_gone_as_soon_as_its_connections_close(url: str) -> None:
    await operations.a_killed_worker_is_gone_as_soon_as_its_connections_close(url)
