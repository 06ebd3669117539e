"""The consume connection (receiver.py): a connection of its own, named for the worker;
deliveries read whole however the socket splits them, bodies of many frames included; and
a consume connection RabbitMQ closes is opened again with nothing lost."""

from __future__ import annotations

import hashlib
import os
import socket

import anyio
import pytest
from asyncq_amqp.receiver import Incoming, Receiver
from harness import Runs, Settled
from pamqp import commands as spec
from pamqp import frame as pamqp_frame
from pamqp.body import ContentBody
from pamqp.header import ContentHeader

import asyncq
from asyncq import current_job

from .amqp_support import amqp_url, rabbitmqctl, require_rabbitmqctl

pytestmark = pytest.mark.anyio


def _consume_connection(listed: str, prefix: str) -> list[str]:
    """The fields of this process's consume connection in ``rabbitmqctl list_connections``."""
    name = f'"asyncq {prefix} {socket.gethostname()}:{os.getpid()} consuming"'
    return [line.split("\t") for line in listed.splitlines() if name in line][0]


async def test_a_worker_consumes_on_a_connection_of_its_own_with_the_url_heartbeat(
    prefix: str,
) -> None:
    require_rabbitmqctl()
    app = asyncq.App(amqp_url(prefix, heartbeat=7))
    ran = anyio.Event()

    @app.task
    async def work() -> None:
        ran.set()

    async with app:
        await work.enqueue()
        async with app.worker(concurrency=4):
            with anyio.fail_after(10):
                await ran.wait()
            listed = await rabbitmqctl(
                "list_connections", "--no-table-headers", "timeout", "client_properties"
            )
    timeout, _ = _consume_connection(listed, prefix)
    assert timeout == "7"
    # The other connection (publishing, declaring) is there too, under the plain name.
    assert f'"asyncq {prefix} {socket.gethostname()}:{os.getpid()}"' in listed


async def test_jobs_of_many_frames_arrive_whole_among_small_ones(prefix: str) -> None:
    # RabbitMQ's frames carry at most frame_max (128 KiB) of a body: a 600 KB job comes in
    # five, across many socket reads, between small jobs.
    app = asyncq.App(amqp_url(prefix))
    seen: dict[int, str] = {}

    @app.task
    async def digest(n: int, data: str) -> None:
        seen[n] = hashlib.sha256(data.encode()).hexdigest()

    payloads = {n: (f"{n}-" * (1 + (n % 3) * 100_000)) for n in range(30)}
    async with app:
        jobs = await digest.enqueue_many([(n, data) for n, data in payloads.items()])
        async with app.worker(concurrency=8):
            for job in jobs:
                await job.result(timeout=20)
    assert seen == {n: hashlib.sha256(data.encode()).hexdigest() for n, data in payloads.items()}


@pytest.mark.slow
async def test_a_consume_connection_rabbitmq_closes_is_opened_again_and_every_job_runs(
    prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_rabbitmqctl()
    app = asyncq.App(amqp_url(prefix), shutdown_timeout=5.0)
    runs = Runs()
    closed = anyio.Event()

    @app.task
    async def work(n: int) -> int:
        runs.record(current_job().id)
        if n < 10 and not closed.is_set():
            await closed.wait()  # held across the close: acked on a connection now gone
        return n

    settled = Settled(monkeypatch, app.backend)
    async with app:
        jobs = await work.enqueue_many([(n,) for n in range(300)])
        async with app.worker(concurrency=10):
            await runs.reached(10, timeout=20)
            listed = await rabbitmqctl(
                "list_connections", "--no-table-headers", "pid", "client_properties"
            )
            pid = _consume_connection(listed, prefix)[0]
            await rabbitmqctl("close_connection", pid, "closed by the test")
            closed.set()
            await settled.all_succeeded([job.id for job in jobs], timeout=60)
        results = [await job.result(timeout=5) for job in jobs]
    assert results == list(range(300))
    # The held jobs' acks were lost with the connection: they ran again, and only they.
    assert runs.duplicates <= 10


# -- the frame reader, on frames pamqp encodes -------------------------------------------------
def _delivery(tag: int, body: bytes, frame_max: int, **properties: object) -> bytes:
    deliver = spec.Basic.Deliver("ctag", tag, tag % 2 == 0, "", "asyncq.q")
    header = ContentHeader(0, len(body), spec.Basic.Properties(**properties))  # type: ignore[arg-type]
    frames = [pamqp_frame.marshal(deliver, 1), pamqp_frame.marshal(header, 1)]
    for start in range(0, len(body), frame_max):
        frames.append(pamqp_frame.marshal(ContentBody(body[start : start + frame_max]), 1))
    return b"".join(frames)


async def test_the_frame_reader_reads_deliveries_however_the_bytes_are_split() -> None:
    got: list[Incoming] = []
    wire = b"".join(
        [
            _delivery(1, b"x" * 250, 100, message_id="a", headers={"x-attempt": 3}),
            _delivery(2, b"", 100, content_type="application/json", message_id="b"),
            _delivery(3, b"small", 100, delivery_mode=2, timestamp=None, app_id="other"),
            _delivery(4, b"{}", 100, delivery_mode=2, priority=7, message_id="d", app_id="x"),
        ]
    )
    expected = [
        Incoming("ctag", 1, False, "a", {"x-attempt": 3}, b"x" * 250),
        Incoming("ctag", 2, True, "b", {}, b""),
        Incoming("ctag", 3, False, None, {}, b"small"),
        Incoming("ctag", 4, True, "d", {}, b"{}", 7),
    ]
    for size in (1, 2, 7, 8, 13, 64, len(wire)):
        got.clear()
        receiver = Receiver(
            "amqp://guest:guest@127.0.0.1:5672/%2F",
            name="test",
            heartbeat=0,
            channel_max=None,
            on_delivery=got.append,
            on_close=lambda _, why: pytest.fail(f"closed: {why}"),
        )
        for start in range(0, len(wire), size):
            receiver.data_received(wire[start : start + size])
        assert got == expected, f"split every {size} bytes"
