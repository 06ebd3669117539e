"""What an operator sees of real worker processes on RabbitMQ: see ``operations``. The
depths come from RabbitMQ's queues, the heartbeats from the record store."""

from __future__ import annotations

import json
import signal
import time

import anyio
import operations
import pytest
from amqp_support import amqp_url

pytestmark = pytest.mark.anyio


async def test_metrics_port_serves_queue_and_dead_letter_depths_and_logs_are_json(
    prefix: str,
) -> None:
    await operations.metrics_port_serves_depths_and_logs_are_json(amqp_url(prefix))


async def test_workers_shows_a_running_worker_then_shows_it_gone_once_killed(prefix: str) -> None:
    await operations.workers_shows_a_worker_then_shows_it_gone_once_killed(amqp_url(prefix))


async def test_a_killed_worker_is_listed_gone_once_rabbitmq_sees_its_connection_close(
    prefix: str,
) -> None:
    # Heartbeats every 60 s: its record stays fresh for three minutes after the kill, so
    # only RabbitMQ's knowledge of the closed connection can list it as gone this soon.
    url = amqp_url(prefix)
    options = ["--heartbeat-interval", "60", "--queues", "default"]
    async with operations.worker(url, *options) as (process, lines):
        line = await lines.expect(lambda text: "started: queues=" in text, timeout=30)
        worker_id = line.split("worker ", 1)[1].split()[0]

        async def listed() -> dict[str, dict[str, object]]:
            found = json.loads(await operations.cli(url, "workers", "--json"))
            return {w["id"]: w for w in found}

        with anyio.fail_after(30):  # the first heartbeat goes out as the worker starts
            while worker_id not in (found := await listed()):
                pass
        assert found[worker_id]["gone"] is False
        process.send_signal(signal.SIGKILL)
        await process.wait()
        killed = time.monotonic()
        with anyio.fail_after(10):  # RabbitMQ closes a dead peer's connection at once
            while not (found := await listed())[worker_id]["gone"]:
                pass
        assert time.monotonic() - killed < 10
        live = json.loads(await operations.cli(url, "workers", "--json", "--live"))
        assert worker_id not in [w["id"] for w in live]
