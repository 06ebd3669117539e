"""RabbitMQ's limits, on a broker configured with low ones.

* Long jobs and the consumer timeout: RabbitMQ takes a delivery back from a live worker
  that holds it unacknowledged past ``consumer_timeout`` and delivers it again. A worker
  refuses a task whose timeout does not fit, stops a job without one before the broker
  acts, and says so clearly when the broker's timeout is shorter than the URL says.
* Message size: a job over the broker's ``max_message_size`` is refused as too large (not
  as a queue declared with other arguments), before publishing when the URL says the limit.

The broker of most of these tests is a private node (scripts/rabbitmq_node.sh) with
``consumer_timeout = 3000`` (ms), a channel tick of 500 ms (RabbitMQ 3.10 checks the
timeout on each tick of a channel, every 60 s by default), so it acts within 3.5 s, and
``max_message_size = 1048576`` (1 MiB, where RabbitMQ 3.x defaults to 128 MiB).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import anyio
import pytest
import services
from harness import Runs

import asyncq
from asyncq import current_job

from .amqp_support import PrivateNode, amqp_url, rabbitmqctl

pytestmark = pytest.mark.anyio

TIMEOUT_MS = 3000
MAX_MESSAGE_SIZE = 1024 * 1024


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateNode]:
    node = PrivateNode(
        tmp_path_factory.mktemp("rabbitmq"),
        conf=f"consumer_timeout = {TIMEOUT_MS}\nmax_message_size = {MAX_MESSAGE_SIZE}",
        advanced="[{rabbit, [{channel_tick_interval, 500}]}].",
    )
    node.start()
    print(f"private RabbitMQ node {node.name} started in {node.boot_seconds:.1f} s")
    try:
        yield node
    finally:
        node.stop()


def node_url(node: PrivateNode, prefix: str, **options: object) -> str:
    query = "&".join(f"{k}={v}" for k, v in options.items())
    return f"{node.url}?records={services.REDIS_URL}&prefix={prefix}" + (
        f"&{query}" if query else ""
    )


class ErrorLines(logging.Handler):
    """ERROR records of the ``asyncq.amqp`` logger, and an event set by the first."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []
        self.first = anyio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())
        self.first.set()


@pytest.fixture
def amqp_errors() -> Iterator[ErrorLines]:
    handler = ErrorLines()
    logger = logging.getLogger("asyncq.amqp")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


async def test_a_task_whose_timeout_exceeds_the_consumer_timeout_is_refused_at_start(
    prefix: str,
) -> None:
    app = asyncq.App(amqp_url(prefix, consumer_timeout=600))

    @app.task(name="report", timeout=900)
    async def report() -> None:
        pass

    @app.task(name="nightly", queue="batch", timeout=7200)
    async def nightly() -> None:  # on a queue this worker does not serve
        pass

    with pytest.raises(asyncq.ConfigurationError) as caught:
        await app.run_worker(burst=True, queues=["default"])
    message = str(caught.value)
    assert message.startswith(
        "task 'report' has timeout=900 s, but RabbitMQ's consumer_timeout is 600 s"
    ), message
    assert "at most 540 s" in message, message  # the limit less its margin
    assert "raise consumer_timeout (seconds) in the broker URL" in message, message
    assert "rabbitmq.conf" in message and "nightly" not in message, message
    # RabbitMQ's own default, 30 minutes, holds when the URL says nothing.
    default = asyncq.App(amqp_url(prefix))
    default.task(name="export", timeout=3600)(report)
    with pytest.raises(asyncq.ConfigurationError, match="consumer_timeout is 1800 s"):
        await default.run_worker(burst=True)


@pytest.mark.slow  # the private node boots in about 10 s
async def test_a_job_without_timeout_is_stopped_before_rabbitmq_takes_it_back(
    node: PrivateNode, prefix: str, amqp_errors: ErrorLines, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="asyncq.worker")
    app = asyncq.App(node_url(node, prefix, consumer_timeout=TIMEOUT_MS / 1000), retries=0)
    runs = Runs()

    @app.task(name="long")
    async def long() -> None:
        runs.record(current_job().id)
        await anyio.sleep_forever()

    async with app:
        job = await long.enqueue()
        async with app.worker(concurrency=2):
            with pytest.raises(asyncq.JobFailed) as caught:
                await job.result(timeout=15)
            # Dead-lettered and acknowledged: RabbitMQ holds nothing it could take back.
            listed = await node.rabbitmqctl(
                "list_queues", "--no-table-headers", "name", "messages_unacknowledged"
            )
    error = caught.value.error
    assert error is not None
    assert error.type == "TimeoutError"
    assert error.message == (
        "job stopped 2.7 s after its delivery, before the broker takes it back: RabbitMQ's "
        "consumer_timeout is 3 s (give the task a timeout of its own below that, or raise "
        "consumer_timeout (seconds) in the broker URL; RabbitMQ before 3.11.15 applies only "
        "the consumer_timeout (ms) of its rabbitmq.conf, so raise that too)"
    )
    assert runs.by_job == {job.id: 1}
    assert f"{prefix}.default\t0" in listed.splitlines(), listed
    assert amqp_errors.messages == []  # the broker closed no channel
    said = [r.getMessage() for r in caplog.records if "attempts are stopped" in r.getMessage()]
    assert said == [
        "RabbitMQ's consumer_timeout is 3 s: attempts are stopped as timed out 2.7 s after "
        "their delivery at the latest, also those of tasks without a timeout"
    ]


@pytest.mark.slow
async def test_a_consumer_timeout_shorter_than_the_url_says_is_one_clear_error(
    node: PrivateNode, prefix: str, amqp_errors: ErrorLines
) -> None:
    # The URL assumes RabbitMQ's default of 30 minutes; this broker's is 3 s, and 3.10
    # ignores the per-consumer timeout asyncq asks for.
    app = asyncq.App(node_url(node, prefix))
    runs = Runs()
    release = anyio.Event()
    started: list[float] = []

    @app.task(name="long")
    async def long() -> str:
        started.append(time.monotonic())
        runs.record(current_job().id)
        await release.wait()
        return "done"

    async with app:
        job = await long.enqueue()
        async with app.worker(concurrency=2):
            # RabbitMQ takes the job back and it runs again, beside its first run: what
            # the consumer timeout does to a job the worker cannot know to stop ...
            await runs.reached(2, timeout=15)
            # ... and what the worker says about it.
            with anyio.fail_after(5):
                await amqp_errors.first.wait()
            release.set()
            assert await job.result(timeout=10) == "done"
    taken_back = started[1] - started[0]
    print(f"RabbitMQ took the delivery back {taken_back:.2f} s after the job started")
    # Counted from the delivery, which comes a little before the handler's first start.
    assert TIMEOUT_MS / 1000 - 0.1 <= taken_back < TIMEOUT_MS / 1000 + 2.0
    assert amqp_errors.messages == [
        "RabbitMQ closed the consumer channel: a delivery stayed unacknowledged past its "
        "consumer timeout (3000 ms). The jobs delivered on that channel went back to their "
        "queue and run again, while this worker may still run them. The broker URL says "
        "consumer_timeout=1800 s, but RabbitMQ 3.10.8 applies only the consumer_timeout of "
        "its own rabbitmq.conf: set consumer_timeout=3 in the broker URL, or raise "
        "consumer_timeout in rabbitmq.conf, so that asyncq stops jobs before the broker "
        "takes them back."
    ]


async def test_consumers_ask_for_the_url_consumer_timeout(prefix: str) -> None:
    # The shared broker is RabbitMQ 3.10, which takes the argument and ignores it (the
    # test above shows it still applies its own); 3.11.15 and later apply it.
    app = asyncq.App(amqp_url(prefix, consumer_timeout=1234.5))

    @app.task(name="probe")
    async def probe() -> None:
        pass

    async with app, app.worker(concurrency=1):
        await (await probe.enqueue()).result(timeout=10)  # consuming, then
        listed = await rabbitmqctl(
            "list_consumers", "--no-table-headers", "queue_name", "arguments"
        )
    ours = [line for line in listed.splitlines() if line.startswith(f"{prefix}.default\t")]
    assert len(ours) == 1, listed
    assert "x-consumer-timeout" in ours[0] and "1234500" in ours[0], ours


async def test_a_job_over_the_broker_s_max_message_size_is_refused_as_too_large(
    node: PrivateNode, prefix: str
) -> None:
    # The URL does not say the limit: asyncq assumes RabbitMQ 3.x's default of 128 MiB,
    # so the broker itself refuses the 2 MiB job, and its refusal is reported as what it is.
    app = asyncq.App(node_url(node, prefix))

    @app.task
    async def store(blob: str) -> None:
        pass

    async with app:
        with pytest.raises(asyncq.MessageTooLarge, match="max_message_size of 1,048,576") as e:
            await store.enqueue("x" * (2 * MAX_MESSAGE_SIZE))
        assert e.value.limit == MAX_MESSAGE_SIZE
        assert "set max_message_size=1048576 in the broker URL" in str(e.value)
        job = await store.enqueue("small")  # the channel RabbitMQ closed is open again
        assert (await app.queue_stats([app.default_queue]))[app.default_queue].pending == 1
        assert await job.status() is asyncq.JobStatus.QUEUED

    # Told the limit, asyncq refuses the job before publishing anything.
    told = asyncq.App(node_url(node, prefix, max_message_size=MAX_MESSAGE_SIZE))
    told.task(name=store.name)(store.fn)
    async with told:
        with pytest.raises(asyncq.MessageTooLarge, match="broker accepts at most 1,048,576"):
            await told.tasks[store.name].enqueue("x" * (2 * MAX_MESSAGE_SIZE))
        assert (await told.queue_stats([told.default_queue]))[told.default_queue].pending == 1


def test_rabbitmq_s_default_max_message_size_follows_its_version() -> None:
    from asyncq_amqp.connection import default_max_message_size

    assert default_max_message_size((3, 10, 8)) == 128 * 1024 * 1024
    assert default_max_message_size((4, 0, 1)) == 16 * 1024 * 1024
    assert default_max_message_size(None) is None
