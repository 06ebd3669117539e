"""taskiq with taskiq-redis: ``RedisStreamBroker``, a stream and a consumer group, with
acknowledgements (the broker taskiq-redis's README recommends).

taskiq keeps no results unless a result backend is set; like taskiq, this runs without one,
unless ``$BENCH_TASKIQ_RESULTS`` is 1: then ``RedisAsyncResultBackend`` stores each result
for an hour (arq's default keep time), as the README's example does.

Worker: taskiq's CLI, ``taskiq worker peers.taskiq_peer:broker --workers 1
--max-async-tasks N``; with ``--workers 1`` taskiq still runs the worker in a child of the
process started, which is the one whose memory is reported. taskiq has no bulk enqueue.
"""

from __future__ import annotations

import os
from importlib.metadata import version

from taskiq_redis import RedisAsyncResultBackend, RedisStreamBroker

from .common import redis_url
from .taskiq_jobs import TaskiqPeer

__all__ = ["PEER", "broker"]

RESULTS = os.environ.get("BENCH_TASKIQ_RESULTS") == "1"
RESULT_TTL = 3600
"""Seconds results are kept, with ``$BENCH_TASKIQ_RESULTS``; the README asks for an expiry."""

broker = RedisStreamBroker(
    url=redis_url(),
    # Create the consumer group at the start of the stream, not at "$" (the default): the
    # drain workloads enqueue before the worker starts, and "$" would skip those jobs.
    consumer_id="0",
)
if RESULTS:
    broker = broker.with_result_backend(
        RedisAsyncResultBackend(redis_url=redis_url(), result_ex_time=RESULT_TTL)
    )


class RedisTaskiqPeer(TaskiqPeer):
    distribution = "taskiq-redis"
    settings = (
        "RedisStreamBroker(consumer_id='0') so jobs enqueued before the worker starts run",
        f"RedisAsyncResultBackend(result_ex_time={RESULT_TTL}) stores results"
        if RESULTS
        else "no result backend (taskiq's default): results are not stored",
        "--log-level WARNING (taskiq logs one INFO line per task)",
    )

    @property
    def version(self) -> str:
        return f"{super().version} (taskiq {version('taskiq')})"


PEER = RedisTaskiqPeer(broker, "peers.taskiq_peer:broker")
