"""A reproduction of what the chaos soak found on the RabbitMQ cluster: an enqueue with an
idempotency key whose publish reached the queue, but whose confirm was lost with the
connection, raises; the backend frees the key as it raises (``_publish_jobs`` forgets the
jobs of a failed publish), so the retry with the same key claims it afresh, under a new job
id, and publishes a second message. Both run: one key, two jobs.

    python benchmarks/soak/confirm_lost.py [AMQP_URL]     # from the repository's root

1. The App reaches RabbitMQ (default: the shared node, 127.0.0.1:5672, records in the
   shared Redis, db 15) through the soak's TCP proxy, delaying everything 0.4 s each way.
2. An enqueue with key K is sent; 0.6 s later (the message at the broker, its confirm on
   its way back through the proxy) the proxy drops the connection: the enqueue raises.
3. The same enqueue, key K, is retried once the proxy lets connections through again.

Prints what each enqueue returned and the messages for the key in the queue (1 expected;
2 seen on 2026-12-07); exit status 1 when there are two. Its queues are deleted after.
"""

from __future__ import annotations

import sys
import uuid
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import anyio

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import asyncq  # noqa: E402
from soak.proxy import Proxy  # noqa: E402

SHARED = "amqp://guest:guest@127.0.0.1:5672/%2F?records=redis://127.0.0.1:6379/15"


async def main(url: str) -> int:
    prefix = f"confirmlost{uuid.uuid4().hex[:8]}"
    proxy = Proxy(("127.0.0.1", 5672))
    proxied = url.replace("127.0.0.1:5672", f"127.0.0.1:{proxy.port}", 1)
    app = asyncq.App(f"{proxied}&prefix={prefix}")

    @app.task(name="confirm.lost")
    async def job(key: str) -> None: ...

    key = "K"
    async with anyio.create_task_group() as tg:
        await tg.start(proxy.serve)
        async with app:
            await job.enqueue("warm-up")  # the queue declared, the connection open
            tg.start_soon(proxy.delay, 0.4, 30.0)
            first: str | BaseException
            try:
                async with anyio.create_task_group() as attempt:
                    attempt.start_soon(_cut_after, proxy, 0.6)
                    first = (await job.options(key=key).enqueue(key)).id
            except* Exception as group:
                first = group.exceptions[0]
            print(f"first enqueue: {first!r}")
            proxy.latency = 0.0
            with anyio.fail_after(30):
                while True:
                    try:
                        second = (await job.options(key=key).enqueue(key)).id
                        break
                    except asyncq.BrokerError as exc:
                        print(f"retry raised {exc!r}")
                        await anyio.sleep(0.5)
            print(f"second enqueue: {second}")
            await anyio.sleep(1.0)
            stats = (await app.queue_stats(["default"]))["default"]
            keyed = stats.pending - 1  # the warm-up's message is the other one
            print(f"messages for key {key} in the queue: {keyed} (1 expected)")
        tg.cancel_scope.cancel()
    await _delete_queues(url, prefix)
    return 0 if keyed <= 1 else 1


async def _delete_queues(url: str, prefix: str) -> None:
    """The queues the App declared and its records, off the (perhaps shared) servers."""
    import aio_pika
    import redis.asyncio

    connection = await aio_pika.connect(url.partition("?")[0])
    async with connection:
        channel = await connection.channel()
        for suffix in ("", ".dead", ".delayed"):
            await channel.queue_delete(f"{prefix}.default{suffix}")
    records = redis.asyncio.Redis.from_url(parse_qs(urlsplit(url).query)["records"][0])
    async with records:
        names = [name async for name in records.scan_iter(f"{prefix}:*")]
        if names:
            await records.delete(*names)


async def _cut_after(proxy: Proxy, seconds: float) -> None:
    await anyio.sleep(seconds)
    await proxy.cut(1.0)


if __name__ == "__main__":
    sys.exit(anyio.run(main, sys.argv[1] if len(sys.argv) > 1 else SHARED))
