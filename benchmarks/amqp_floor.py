"""The floors under asyncq's RabbitMQ numbers on this machine, with no job library on top.

    .venv-amqp-bench/bin/python benchmarks/amqp_floor.py [-n 20000] [--batch 1000]

Two clients, the same measurements: **aiormq** (the client under aio-pika, and so under
asyncq's publishing), used as the backend used it; and a **raw** client that costs almost
nothing per message (frames encoded once and written in large chunks, incoming frames split
with ``struct``), so what limits it is RabbitMQ itself. Each publishes persistent messages of
``--size`` bytes (200, about an asyncq job's) to one durable classic queue on a channel with
publisher confirms:

- one message at a time, its confirm awaited (a one-await enqueue);
- batches of ``--batch``, each batch's confirms awaited together (``enqueue_many``);

then drains ``-n`` messages with one consumer at ``basic.qos`` prefetch ``--prefetch`` (100):

- aiormq: one ``basic.ack`` per message from the delivery's task, or a ``multiple`` ack of the
  highest tag once per event-loop turn in which deliveries arrived; raw: a ``multiple`` ack
  per socket read;
- ``no_ack``: RabbitMQ sends without waiting for acks (the ceiling).

Between them, **asyncq**: the consume connection asyncq's workers receive on
(``asyncq_amqp.receiver``), with a ``multiple`` ack once per event-loop turn.

It works in a virtual host of its own, ``asyncq-floor``, created before and deleted after
with ``rabbitmqctl`` (``--node`` for ``rabbitmqctl -n``); never the default one. The aiormq
lines also give the process's CPU time as a share of the elapsed time: near 100%, the client
is the limit.
"""

from __future__ import annotations

import argparse
import asyncio
import struct
import subprocess
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiormq
from aiormq.abc import DeliveredMessage
from asyncq_amqp.receiver import Incoming, Receiver
from pamqp import body as pbody
from pamqp import commands as spec
from pamqp import frame, header

VHOST = "asyncq-floor"
QUEUE = "floor"
Result = tuple[float, float]
"""Messages per second, and the process's CPU time as a share of the elapsed time."""


def rabbitmqctl(node: str | None, *args: str, check: bool = True) -> None:
    command = ["rabbitmqctl", *(["-n", node] if node else []), "-q", *args]
    subprocess.run(command, check=check, capture_output=True, stdin=subprocess.DEVNULL)


class Timer:
    def __init__(self, n: int) -> None:
        self.n, self.start, self.cpu = n, time.perf_counter(), time.process_time()

    def result(self) -> Result:
        elapsed = time.perf_counter() - self.start
        return self.n / elapsed, (time.process_time() - self.cpu) / elapsed


# -- aiormq ------------------------------------------------------------------------------------
async def aiormq_publish(channel: aiormq.Channel, n: int, batch: int, body: bytes) -> Result:
    props = spec.Basic.Properties(delivery_mode=2, content_type="application/json")

    def send() -> Awaitable[object]:
        return channel.basic_publish(body, routing_key=QUEUE, properties=props, wait=False)

    timer = Timer(n)
    for done in range(0, n, batch):
        if batch == 1:
            await send()
        else:
            await asyncio.gather(*(send() for _ in range(min(batch, n - done))))
    return timer.result()


async def aiormq_consume(connection: aiormq.Connection, n: int, prefetch: int, mode: str) -> Result:
    channel = await connection.channel()
    await channel.basic_qos(prefetch_count=prefetch)
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    state = {"seen": 0, "top": 0, "flush": False}

    def flush() -> None:
        state["flush"] = False
        loop.create_task(channel.basic_ack(state["top"], multiple=True, wait=False))

    async def on_message(message: DeliveredMessage) -> None:
        tag = message.delivery_tag or 0
        state["seen"] += 1
        if mode == "each":
            await channel.basic_ack(tag, wait=False)
        elif mode == "multiple":
            state["top"] = max(state["top"], tag)
            if not state["flush"]:
                state["flush"] = True
                loop.call_soon(flush)
        if state["seen"] == n and not done.done():
            done.set_result(None)

    timer = Timer(n)
    await channel.basic_consume(QUEUE, on_message, no_ack=mode == "no_ack")
    await done
    result = timer.result()
    await channel.close()
    return result


async def aiormq_floors(args: argparse.Namespace) -> list[tuple[str, Result]]:
    body = b"x" * args.size
    connection = await aiormq.connect(f"amqp://guest:guest@127.0.0.1:{args.port}/{VHOST}")
    out: list[tuple[str, Result]] = []
    try:
        channel = await connection.channel(publisher_confirms=True)
        await channel.queue_declare(QUEUE, durable=True)
        for batch in (1, args.batch):
            await channel.queue_purge(QUEUE)
            count = args.n // 4 if batch == 1 else args.n
            out.append((publish_label(batch), await aiormq_publish(channel, count, batch, body)))
        for mode, label in [("each", "1 ack per message"), ("multiple", "multiple acks")]:
            await channel.queue_purge(QUEUE)
            await aiormq_publish(channel, args.n, args.batch, body)
            result = await aiormq_consume(connection, args.n, args.prefetch, mode)
            out.append((f"consume, {label}", result))
        await channel.queue_purge(QUEUE)
        await aiormq_publish(channel, args.n, args.batch, body)
        out.append(("consume, no_ack", await aiormq_consume(connection, args.n, 0, "no_ack")))
    finally:
        await connection.close()
    return out


def publish_label(batch: int) -> str:
    return (
        "publish, 1 confirm awaited per message" if batch == 1 else f"publish, batches of {batch:,}"
    )


# -- raw ---------------------------------------------------------------------------------------
def split(data: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """Complete frames in ``data`` as (type, payload), and the incomplete rest."""
    frames, i = [], 0
    while len(data) - i >= 7:
        (size,) = struct.unpack_from(">I", data, i + 3)
        if len(data) - i < 8 + size:
            break
        frames.append((data[i], data[i + 7 : i + 7 + size]))
        i += 8 + size
    return frames, data[i:]


class Raw:
    """One connection, channel 1, spoken to with as little work per message as possible."""

    ACK = b"\x00\x3c\x00\x50"  # Basic.Ack: class 60, method 80
    DELIVER = b"\x00\x3c\x00\x3c"  # Basic.Deliver: class 60, method 60

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer, self.rest = reader, writer, b""

    @classmethod
    async def open(cls, port: int) -> Raw:
        raw = cls(*await asyncio.open_connection("127.0.0.1", port))
        raw.writer.write(b"AMQP\x00\x00\x09\x01")
        await raw.method()  # Connection.Start
        login = "\x00guest\x00guest"
        await raw.call(spec.Connection.StartOk(mechanism="PLAIN", response=login), reply=False)
        tune = await raw.method()
        await raw.call(spec.Connection.TuneOk(tune.channel_max, tune.frame_max, 0), reply=False)
        await raw.call(spec.Connection.Open(VHOST))
        await raw.call(spec.Channel.Open(), channel=1)
        return raw

    async def frames(self) -> list[tuple[int, bytes]]:
        frames, self.rest = split(self.rest + await self.reader.read(262144))
        return frames

    async def method(self) -> Any:
        while True:
            while (
                len(self.rest) < 7 or len(self.rest) < 8 + struct.unpack_from(">I", self.rest, 3)[0]
            ):
                self.rest += await self.reader.read(65536)
            size = 8 + struct.unpack_from(">I", self.rest, 3)[0]
            raw, self.rest = self.rest[:size], self.rest[size:]
            return frame.unmarshal(raw)[2]

    async def call(self, method: Any, channel: int = 0, reply: bool = True) -> Any:
        self.writer.write(frame.marshal(method, channel))
        return await self.method() if reply else None

    async def publish(self, n: int, batch: int, size: int) -> Result:
        props = spec.Basic.Properties(delivery_mode=2, content_type="application/json")
        one = (
            frame.marshal(spec.Basic.Publish(exchange="", routing_key=QUEUE), 1)
            + frame.marshal(header.ContentHeader(0, size, props), 1)
            + frame.marshal(pbody.ContentBody(b"x" * size), 1)
        )
        timer, sent, confirmed = Timer(n), 0, 0
        while sent < n:
            count = min(batch, n - sent)
            self.writer.write(one * count)
            sent += count
            while confirmed < sent:  # RabbitMQ confirms with multiple acks
                for kind, payload in await self.frames():
                    if kind == 1 and payload[:4] == self.ACK:
                        confirmed = max(confirmed, struct.unpack_from(">Q", payload, 4)[0])
        return timer.result()

    async def consume(self, n: int, prefetch: int, no_ack: bool) -> Result:
        await self.call(spec.Basic.Qos(prefetch_count=prefetch), channel=1)
        await self.call(spec.Basic.Consume(queue=QUEUE, no_ack=no_ack), channel=1)
        timer, seen = Timer(n), 0
        while seen < n:
            top = 0
            for kind, payload in await self.frames():
                if kind == 1 and payload[:4] == self.DELIVER:
                    tag_at = 5 + payload[4]  # after the consumer tag (a short string)
                    top = struct.unpack_from(">Q", payload, tag_at)[0]
                    seen += 1
            if top and not no_ack:
                self.writer.write(frame.marshal(spec.Basic.Ack(top, multiple=True), 1))
        return timer.result()


async def raw_floors(args: argparse.Namespace) -> list[tuple[str, Result]]:
    out: list[tuple[str, Result]] = []
    raw = await Raw.open(args.port)
    await raw.call(spec.Queue.Declare(queue=QUEUE, durable=True), channel=1)
    await raw.call(spec.Confirm.Select(), channel=1)
    for batch in (1, args.batch):
        await raw.call(spec.Queue.Purge(queue=QUEUE), channel=1)
        count = args.n // 4 if batch == 1 else args.n
        out.append((publish_label(batch), await raw.publish(count, batch, args.size)))
    raw.writer.close()
    for no_ack in (False, True):
        raw = await Raw.open(args.port)  # a fresh channel: a consumer cannot be undone cheaply
        await raw.call(spec.Queue.Purge(queue=QUEUE), channel=1)
        await raw.call(spec.Confirm.Select(), channel=1)
        await raw.publish(args.n, args.batch, args.size)
        label = "consume, no_ack" if no_ack else "consume, multiple ack per read"
        out.append((label, await raw.consume(args.n, 0 if no_ack else args.prefetch, no_ack)))
        raw.writer.close()
    return out


# -- asyncq's receiver ---------------------------------------------------------------------------
async def receiver_floors(args: argparse.Namespace) -> list[tuple[str, Result]]:
    """asyncq's consume connection (``asyncq_amqp.receiver``) on the same messages, with a
    ``multiple`` ack of the highest tag once per event-loop turn, as the worker acks."""
    raw = await Raw.open(args.port)  # fills the queue the fast way
    await raw.call(spec.Queue.Declare(queue=QUEUE, durable=True), channel=1)
    await raw.call(spec.Queue.Purge(queue=QUEUE), channel=1)
    await raw.call(spec.Confirm.Select(), channel=1)
    await raw.publish(args.n, args.batch, args.size)
    raw.writer.close()
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    state = {"seen": 0, "top": 0, "due": False}

    def ack() -> None:
        state["due"] = False
        receiver.ack(state["top"], multiple=True)

    def delivered(message: Incoming) -> None:
        state["seen"] += 1
        state["top"] = message.delivery_tag
        if not state["due"]:
            state["due"] = True
            loop.call_soon(ack)
        if state["seen"] == args.n and not done.done():
            done.set_result(None)

    receiver = Receiver(
        f"amqp://guest:guest@127.0.0.1:{args.port}/{VHOST}",
        name="asyncq-floor",
        heartbeat=0,
        channel_max=None,
        on_delivery=delivered,
        on_close=lambda _, why: None,
    )
    await receiver.open(10.0)
    try:
        await receiver.qos(args.prefetch)
        timer = Timer(args.n)
        await receiver.consume(QUEUE, "floor", {})
        await done
        return [("consume, multiple acks", timer.result())]
    finally:
        await receiver.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=20_000, help="messages (default %(default)s)")
    parser.add_argument("--batch", type=int, default=1_000, help="default %(default)s")
    parser.add_argument("--prefetch", type=int, default=100, help="default %(default)s")
    parser.add_argument("--size", type=int, default=200, help="body bytes (default %(default)s)")
    parser.add_argument("--port", type=int, default=5672, help="RabbitMQ on 127.0.0.1 (5672)")
    parser.add_argument("--node", help="the node rabbitmqctl manages (rabbitmqctl -n)")
    args = parser.parse_args()
    rabbitmqctl(args.node, "delete_vhost", VHOST, check=False)
    rabbitmqctl(args.node, "add_vhost", VHOST)
    rabbitmqctl(args.node, "set_permissions", "-p", VHOST, "guest", ".*", ".*", ".*")
    runs: list[tuple[str, Callable[[argparse.Namespace], Awaitable[list[tuple[str, Result]]]]]]
    runs = [("aiormq", aiormq_floors), ("asyncq", receiver_floors), ("raw", raw_floors)]
    try:
        for client, run in runs:
            for label, (rate, cpu) in asyncio.run(run(args)):
                print(f"{client:<6} {label:<40} {rate:>8,.0f} msg/s   process CPU {cpu:4.0%}")
    finally:
        rabbitmqctl(args.node, "delete_vhost", VHOST, check=False)


if __name__ == "__main__":
    main()
