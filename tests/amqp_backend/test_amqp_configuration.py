"""Configuration errors of the amqp:// backend are asyncq's ConfigurationError with a message
that says what to change: a record-store feature without the ``records`` option, an unknown
option, a bad ``queue_type``, and a queue declared earlier with other arguments than this
App's."""

from __future__ import annotations

import re

import pytest
import services

import asyncq
from asyncq.backend import resolve_backend

from .amqp_support import amqp_url

pytestmark = pytest.mark.anyio

BASE = services.AMQP_URL


async def test_without_records_the_store_says_to_add_a_redis_url() -> None:
    backend = resolve_backend("amqp://shop:s3cret@127.0.0.1:5672/%2F?prefix=orders")
    assert not backend.store.available
    with pytest.raises(asyncq.ConfigurationError) as caught:
        await backend.store.job_info("some-job", "default")
    message = str(caught.value)
    assert "needs a job record store" in message and "add records=redis://" in message, message
    assert "\n" not in message, message


def test_unknown_option_is_named_with_the_known_ones() -> None:
    with pytest.raises(asyncq.ConfigurationError) as caught:
        resolve_backend(f"{BASE}?records={services.REDIS_URL}&visibility_timeout=30")
    message = str(caught.value)
    assert "unknown option 'visibility_timeout'" in message, message
    assert "queue_type" in message and "records" in message, message  # the known ones


def test_records_take_redis_or_postgresql_urls_and_nothing_else() -> None:
    from asyncq_amqp.records import RecordStore
    from asyncq_postgres.amqp_records import PostgresRecords

    redis = resolve_backend(f"{BASE}?records={services.REDIS_URL}")
    assert isinstance(redis.records, RecordStore)  # type: ignore[attr-defined]
    postgres = resolve_backend(f"{BASE}?records=postgresql%3A%2F%2Fh%2Fd%3Fschema%3Drecs")
    assert isinstance(postgres.records, PostgresRecords)  # type: ignore[attr-defined]
    with pytest.raises(asyncq.ConfigurationError, match="must be a redis:// or postgresql://"):
        resolve_backend(f"{BASE}?records=mysql://h/d")


@pytest.mark.parametrize("queue_type", ["stream", "Quorum", ""])
def test_bad_queue_type(queue_type: str) -> None:
    url = f"{BASE}?records={services.REDIS_URL}&queue_type={queue_type}"
    with pytest.raises(asyncq.ConfigurationError) as caught:
        resolve_backend(url)
    message = str(caught.value)
    assert f"bad value {queue_type!r} for option 'queue_type'" in message, message
    assert "'classic' or 'quorum'" in message, message


async def test_quorum_app_on_a_prefix_declared_classic_names_the_mismatch(prefix: str) -> None:
    classic = asyncq.App(amqp_url(prefix))
    quorum = asyncq.App(amqp_url(prefix, queue_type="quorum"))
    for app in (classic, quorum):

        @app.task(name="work")
        async def work() -> None:
            pass

    async with classic:
        # Declares the prefix's queues, classic: the work queues, and the wait queue of a
        # delay of a minute (32.768 s, the longest wait that does not overshoot).
        await classic.tasks["work"].enqueue()
        await classic.tasks["work"].options(delay=60).enqueue()
    async with quorum:
        with pytest.raises(asyncq.ConfigurationError) as caught:
            await quorum.tasks["work"].enqueue()
        # RabbitMQ closed the channel of the refused declaration. The App goes on at once:
        # a job for another queue is enqueued, and the refused queue is refused again the
        # same way (neither fails on the closed channel as if RabbitMQ were unreachable).
        other = quorum.tasks["work"].options(queue="other")
        await other.enqueue()
        with pytest.raises(asyncq.ConfigurationError) as again:
            await quorum.tasks["work"].enqueue()
        assert str(again.value) == str(caught.value)
        # The same for a wait queue declared classic, refused when a delay first needs it.
        with pytest.raises(asyncq.ConfigurationError) as wait:
            await quorum.tasks["work"].options(queue="other", delay=60).enqueue()
        await other.enqueue()
        stats = await quorum.queue_stats(["default", "other"])
    # The classic queue is untouched (its one job); the other queue got its two.
    assert (stats["default"].pending, stats["other"].pending) == (1, 2)
    message = str(caught.value)
    assert not isinstance(caught.value.__cause__, asyncq.ConfigurationError)
    # What RabbitMQ said (which queue, which argument, both values) and what to do.
    assert f"queue '{prefix}.default'" in message, message
    # RabbitMQ names the first argument that differs: the classic work queue's priorities.
    assert re.search(r"'x-max-priority'.*received none.*'9'", message), message
    assert "it is a classic work queue" in message, message
    assert "queue_type" in message and "another prefix" in message, message
    assert f"queue '{prefix}.wait.32768'" in str(wait.value), str(wait.value)
