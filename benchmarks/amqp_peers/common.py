"""What the RabbitMQ peers add to :mod:`peers.common`: the broker URL and a thread-safe probe.

Every library works in one virtual host of its own, ``asyncq-bench``, which the driver
deletes and creates again before each workload (so no run sees another's queues, and
nothing outside it is touched). The async libraries (asyncq, taskiq) use
:data:`peers.common.probe` as the Redis harness does; dramatiq and celery run their handlers
in threads, with no event loop, so they use :data:`sync_probe`: the same keys and the same
single Redis command per job, through a blocking ``redis`` client (hiredis parser).

asyncq's AMQP backend keeps its job records in Redis too: :func:`asyncq_url` names the
records' database (``$BENCH_ASYNCQ_RECORDS``) and the prefix of its queues and keys
(``$BENCH_ASYNCQ_PREFIX``), which the driver makes fresh for every run.
"""

from __future__ import annotations

import abc
import os
import threading
import time

import redis
from peers.common import COUNTER, DONE, LATENCIES, READY, SLEEP_SECONDS, Kind, redis_url

__all__ = [
    "ASYNCQ_RECORDS",
    "VHOST",
    "BlockingSend",
    "SyncProbe",
    "amqp_url",
    "asyncq_url",
    "publisher_confirms",
    "sync_probe",
    "threaded_sends",
]

VHOST = "asyncq-bench"
"""The RabbitMQ virtual host every library works in; never the default one."""

ASYNCQ_RECORDS = "redis://127.0.0.1:6379/12"
"""Where asyncq keeps its job records unless ``$BENCH_ASYNCQ_RECORDS`` says otherwise."""


def amqp_url() -> str:
    """The broker every library uses: ``$BENCH_AMQP_URL``."""
    return os.environ.get("BENCH_AMQP_URL", f"amqp://guest:guest@127.0.0.1:5672/{VHOST}")


def asyncq_url() -> str:
    """asyncq's broker: :func:`amqp_url` with its job records in Redis
    (``$BENCH_ASYNCQ_RECORDS``; set and empty: no records) and its queues and keys under
    ``$BENCH_ASYNCQ_PREFIX``."""
    records = os.environ.get("BENCH_ASYNCQ_RECORDS", ASYNCQ_RECORDS)
    prefix = os.environ.get("BENCH_ASYNCQ_PREFIX", "asyncq-bench")
    if not records:  # RabbitMQ alone
        return f"{amqp_url()}?prefix={prefix}"
    return f"{amqp_url()}?records={records}&prefix={prefix}"


def publisher_confirms() -> bool:
    """``$BENCH_AMQP_CONFIRMS`` is 1: turn on publisher confirms where they are off by
    default (dramatiq, celery), so every enqueue waits for the broker's confirm."""
    return os.environ.get("BENCH_AMQP_CONFIRMS") == "1"


class SyncProbe:
    """:class:`peers.common.Probe` for handlers that run in threads: one command per job."""

    def __init__(self) -> None:
        self._redis: redis.Redis | None = None
        self._lock = threading.Lock()
        self.target = int(os.environ.get("BENCH_TARGET", "0"))
        self.runs = 0

    def open(self) -> None:
        """Call from the library's worker-startup hook, in the process that runs the jobs."""
        self._redis = redis.Redis.from_url(redis_url())
        self._redis.hset(READY, mapping={"time": repr(time.time()), "pid": os.getpid()})

    def close(self) -> None:
        if self._redis is not None:
            self._redis.close()
            self._redis = None

    @property
    def redis(self) -> redis.Redis:
        if self._redis is None:
            raise RuntimeError("the probe is not open: the worker-startup hook did not run")
        return self._redis

    def count(self) -> None:
        """A ``noop`` job's whole work; the job that reaches the target stores the count
        and the time. The lock only guards the increment: the threads run it at once."""
        with self._lock:
            self.runs += 1
            runs = self.runs
        if runs == self.target:
            self.redis.mset({COUNTER: runs, DONE: repr(time.time())})
        elif runs > self.target:
            self.redis.set(COUNTER, runs)

    def sleep_then_count(self) -> None:
        time.sleep(SLEEP_SECONDS)
        self.count()

    def latency(self, sent: float) -> None:
        """A ``latency`` job: how long after its enqueue (``sent``) it started."""
        started = time.time()
        self.redis.rpush(LATENCIES, repr(started - sent))


sync_probe = SyncProbe()
"""The one thread-safe probe of a worker process (dramatiq, celery)."""


class BlockingSend(abc.ABC):
    """A peer whose enqueue is a blocking call (dramatiq's ``send()``, celery's
    ``apply_async()``). On one event loop its W1c callers would only take turns, so
    ``amqp_compare.py`` measures W1c with :func:`threaded_sends`: callers that are threads,
    as a threaded web server's requests are."""

    @abc.abstractmethod
    def send(self, kind: Kind) -> None:
        """Send one job from the calling thread, as the library's own API does."""

    def thread_done(self) -> None:
        """Called by each caller thread when it has sent its last job."""
        return None

    def threads_done(self) -> None:
        """Called once all the caller threads are done."""
        return None


def threaded_sends(peer: BlockingSend, n: int, callers: int) -> float:
    """W1c for a :class:`BlockingSend` peer: ``n`` jobs sent by ``callers`` threads at once,
    each sending one at a time; jobs/s. Each thread first sends one job untimed (opening its
    connection or taking one from the library's pool, as a warm server has), then all start
    together at a barrier; the clock runs from there until the last thread is done."""
    lock = threading.Lock()
    left = n
    errors: list[BaseException] = []
    callers = min(callers, n)
    start = threading.Barrier(callers + 1)

    def caller() -> None:
        nonlocal left
        try:
            peer.send("noop")  # warm-up, not counted
        except BaseException as exc:
            errors.append(exc)
            start.abort()
            raise
        try:
            start.wait()
            while True:
                with lock:
                    if left <= 0:
                        return
                    left -= 1
                peer.send("noop")
        except threading.BrokenBarrierError:
            return
        except BaseException as exc:
            errors.append(exc)
            raise
        finally:
            peer.thread_done()

    threads = [threading.Thread(target=caller, name=f"w1c-{i}") for i in range(callers)]
    for thread in threads:
        thread.start()
    try:
        start.wait()
    except threading.BrokenBarrierError:
        pass
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    took = time.perf_counter() - began
    peer.threads_done()
    if errors:
        raise RuntimeError(f"{len(errors)} caller threads failed; the first: {errors[0]!r}")
    return n / took
