"""OpenTelemetry metrics of a worker, and what ``asyncq run --metrics-port`` serves.

Instruments (OpenTelemetry name, then the Prometheus name the exporter gives it):

* ``asyncq.jobs`` (``asyncq_jobs_total``): attempts finished; queue, task, outcome.
* ``asyncq.job.duration`` (``asyncq_job_duration_seconds``): how long an attempt ran;
  queue, task, outcome.
* ``asyncq.job.queue_wait`` (``asyncq_job_queue_wait_seconds``): time in the queue; queue,
  task.
* ``asyncq.jobs.in_flight`` (``asyncq_jobs_in_flight``): jobs workers hold; queue.
* ``queue_depth_pending``, ``queue_depth_scheduled``, ``queue_depth_running`` and
  ``queue_dlq_depth`` (the same names in Prometheus): the queue's depth; queue.
* ``queue_oldest_pending_age_seconds``: how long the queue's oldest pending job has been
  waiting for a worker, its lag (0 with none pending); queue. Not on RabbitMQ, which
  cannot tell without a write per job.
* ``asyncq.dead_letters.removed`` (``asyncq_dead_letters_removed_total``): dead letters
  that retention removed (the backend's ``dead_ttl`` or ``dead_max``); queue, and reason
  ``ttl`` or ``max``.
* ``asyncq.schedule.last_slot_timestamp_seconds`` (the same in Prometheus, dots as
  underscores): each schedule's last fired slot; schedule, and the status of that slot's
  job (``unknown`` once its record expired). ``time() - ...`` past a schedule's period is a
  missed slot; ``status="dead"`` a failed one.

Outcomes are ``succeeded``, ``retried``, ``snoozed``, ``dead``, ``cancelled`` and
``released`` (handed back to the queue unstarted or unfinished by a stopping worker).
Queue wait is the time from when a job could first run (enqueued, or its delay or retry
backoff over) until a worker started it. The depth gauges are the backend's
``queue_stats`` of the worker's queues, polled every ``metrics_interval`` seconds (a worker
option), so a scrape reads the last poll and costs the broker nothing.

The queue depth names carry no ``asyncq_`` prefix and no unit suffix: they are what
autoscalers and alert rules are written against (see ``examples/deploy``), so they stay
short and stable.

Only the OpenTelemetry API is used. Without a configured MeterProvider, a worker builds no
instruments and records nothing.
"""

from __future__ import annotations

import logging
import os
import weakref
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio

from .errors import BrokerError
from .settlement import Outcome

if TYPE_CHECKING:
    from opentelemetry.metrics import CallbackOptions, Meter, MeterProvider, Observation

    from .periodic import ScheduleReport
    from .records import QueueStats, TrimmedDeadLetters

__all__ = [
    "PrometheusServer",
    "WorkerMetrics",
    "configured_provider",
    "serve_prometheus",
]

log = logging.getLogger("asyncq.metrics")


# Seconds: from a no-op job (sub-millisecond) to a report that takes minutes. The SDK's
# default buckets are shaped for milliseconds.
_DURATION_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 300.0,
)  # fmt: skip
_WAIT_BUCKETS = (
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
    900.0, 3600.0,
)  # fmt: skip

_DEPTHS = (
    ("queue_depth_pending", "pending", "Jobs ready to run, waiting for a worker."),
    ("queue_depth_scheduled", "scheduled", "Jobs delayed or waiting for a retry."),
    ("queue_depth_running", "running", "Jobs held by workers and not yet acknowledged."),
    ("queue_dlq_depth", "dead", "Jobs in the dead-letter queue."),
    (
        "queue_oldest_pending_age_seconds",
        "oldest_pending_age",
        "Seconds the oldest pending job has waited for a worker: the queue's lag "
        "(0 when none is pending; absent where the broker cannot tell).",
    ),
)


def configured_provider() -> MeterProvider | None:
    """The global MeterProvider, if an SDK (or any real provider) has been set."""
    try:  # imported here, once a worker starts: no command that runs none pays for it
        from opentelemetry import metrics as otel_metrics
    except ImportError:  # the otel extra is not installed: metrics stay off
        return None
    provider = otel_metrics.get_meter_provider()
    # Until something sets one, the API hands out its own proxy, whose class it does not
    # export: known by name, like the no-op one.
    if type(provider).__name__ in ("_ProxyMeterProvider", "NoOpMeterProvider"):
        return None
    return provider


class _Instruments:
    """The instruments of one MeterProvider, shared by every worker of the process that
    records through it (an SDK warns about, and ignores, a second instrument of a name)."""

    def __init__(self, provider: MeterProvider) -> None:
        from . import __version__

        meter: Meter = provider.get_meter("asyncq", __version__)
        self.workers: set[WorkerMetrics] = set()
        # Counted here and reported when the reader collects: an SDK counter's add() costs
        # about 10 us a call (attribute checks and hashing), a tenth of a no-op job.
        self.finished_counts: Counter[tuple[str, str, Outcome]] = Counter()
        meter.create_observable_counter(
            "asyncq.jobs",
            [self._observe_finished],
            unit="{job}",
            description="Job attempts finished, by outcome.",
        )
        self.limited_counts: Counter[tuple[str, str, str]] = Counter()
        meter.create_observable_counter(
            "asyncq.jobs.limited",
            [self._observe_limited],
            unit="{job}",
            description="Jobs held back by a rate or concurrency limit (each time one is "
            "sent back to wait), by task and limit: rate or concurrency.",
        )
        self.removed_dead = meter.create_counter(
            "asyncq.dead_letters.removed",
            unit="{job}",
            description="Dead letters removed by retention (the backend's dead_ttl or "
            "dead_max), by reason: ttl or max.",
        )
        self.duration = meter.create_histogram(
            "asyncq.job.duration",
            unit="s",
            description="How long an attempt ran, by outcome.",
            explicit_bucket_boundaries_advisory=_DURATION_BUCKETS,
        )
        self.wait = meter.create_histogram(
            "asyncq.job.queue_wait",
            unit="s",
            description="How long a job waited in its queue after it could have run.",
            explicit_bucket_boundaries_advisory=_WAIT_BUCKETS,
        )
        meter.create_observable_gauge(
            "asyncq.jobs.in_flight",
            [self._observe_in_flight],
            unit="{job}",
            description="Jobs held by workers: running, or prefetched and waiting to start.",
        )
        for name, field, description in _DEPTHS:
            meter.create_observable_gauge(
                name, [self._depth_callback(field)], description=description
            )
        meter.create_observable_gauge(
            "asyncq.schedule.last_slot_timestamp_seconds",
            [self._observe_schedules],
            description="Each schedule's last fired slot (epoch seconds), with the status of "
            "its job: alert when it falls behind, or on status dead.",
        )

    def _observe_finished(self, options: CallbackOptions) -> Iterable[Observation]:
        from opentelemetry.metrics import Observation

        return [
            Observation(n, {"queue": queue, "task": task or "?", "outcome": outcome.label})
            for (queue, task, outcome), n in list(self.finished_counts.items())
        ]

    def _observe_limited(self, options: CallbackOptions) -> Iterable[Observation]:
        from opentelemetry.metrics import Observation

        return [
            Observation(n, {"queue": queue, "task": task, "limit": limit})
            for (queue, task, limit), n in list(self.limited_counts.items())
        ]

    def _observe_in_flight(self, options: CallbackOptions) -> Iterable[Observation]:
        from opentelemetry.metrics import Observation

        counts: Counter[str] = Counter()
        for worker in list(self.workers):
            # Every queue a worker serves reads 0 while it holds none: a series that comes
            # and goes with the load would read as "no data" in dashboards and alerts.
            counts.update(dict.fromkeys(worker.queues, 0))
            counts.update(worker.in_flight())
        return [Observation(n, {"queue": queue}) for queue, n in counts.items()]

    def _observe_schedules(self, options: CallbackOptions) -> Iterable[Observation]:
        from opentelemetry.metrics import Observation

        found = {r.schedule.name: r for worker in list(self.workers) for r in worker.schedules}
        return [
            Observation(
                r.last_slot.timestamp(),
                {"schedule": name, "status": str(r.last_status or "unknown")},
            )
            for name, r in found.items()
            if r.last_slot is not None
        ]

    def _depth_callback(self, field: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            from opentelemetry.metrics import Observation

            # Workers of one process that share a queue saw the same depth: one series each.
            depths = {q: s for worker in list(self.workers) for q, s in worker.depths.items()}
            values = ((q, getattr(s, field)) for q, s in depths.items())
            return [Observation(v, {"queue": q}) for q, v in values if v is not None]

        return observe


_instruments: weakref.WeakKeyDictionary[Any, _Instruments] = weakref.WeakKeyDictionary()


class WorkerMetrics:
    """What one worker records: ``started`` and ``finished`` once per job, and the depths of
    its queues, polled by ``poll_depths``. ``close`` when the worker stops."""

    def __init__(
        self,
        provider: MeterProvider,
        in_flight: Callable[[], Iterable[str]],
        queues: Sequence[str] = (),
    ) -> None:
        instruments = _instruments.get(provider)
        if instruments is None:
            instruments = _instruments[provider] = _Instruments(provider)
        self._instruments = instruments
        self.in_flight = in_flight
        """The queue of each job the worker holds."""
        self.queues = tuple(queues)
        """The queues the worker serves: each has an in-flight series from the start."""
        self.depths: dict[str, QueueStats] = {}
        self.schedules: list[ScheduleReport] = []
        """The App's schedules as last polled (``poll_schedules``)."""
        # The attribute sets repeat for every job of a task: build each once.
        self._labels_cache: dict[tuple[str, str, Outcome | None], dict[str, str]] = {}
        instruments.workers.add(self)

    def close(self) -> None:
        self._instruments.workers.discard(self)

    def _labels(self, queue: str, task: str, outcome: Outcome | None) -> dict[str, str]:
        key = (queue, task, outcome)
        labels = self._labels_cache.get(key)
        if labels is None:
            labels = {"queue": queue, "task": task or "?"}
            if outcome is not None:
                labels["outcome"] = outcome.label
            self._labels_cache[key] = labels
        return labels

    def started(self, queue: str, task: str, waited: float) -> None:
        self._instruments.wait.record(max(waited, 0.0), self._labels(queue, task, None))

    def finished(self, queue: str, task: str, outcome: Outcome, duration: float) -> None:
        self._instruments.finished_counts[queue, task, outcome] += 1
        self._instruments.duration.record(duration, self._labels(queue, task, outcome))

    def limited(self, queue: str, task: str, limit: str) -> None:
        """A job of ``task`` was held back by its ``limit`` ("rate" or "concurrency")."""
        self._instruments.limited_counts[queue, task, limit] += 1

    def trimmed(self, trim: TrimmedDeadLetters) -> None:
        """Retention removed these dead letters (rare: a counter's add() is fine here)."""
        for reason, count in (("ttl", trim.expired), ("max", trim.beyond_max)):
            if count:
                self._instruments.removed_dead.add(count, {"queue": trim.queue, "reason": reason})

    async def poll_depths(self, stats: Callable[[], Any], interval: float) -> None:
        """Keep the depth gauges fresh: ask the backend every ``interval`` seconds."""
        while True:
            try:
                found: Sequence[QueueStats] = await stats()
            except BrokerError as exc:
                log.warning("could not read queue depths for metrics: %s", exc)
            else:
                self.depths = {s.queue: s for s in found}
            await anyio.sleep(interval)  # a gauge is sampled on a clock

    async def poll_schedules(
        self, reports: Callable[[], Awaitable[list[ScheduleReport]]], interval: float
    ) -> None:
        """Keep the schedule gauge fresh: read the schedules every ``interval`` seconds."""
        while True:
            try:
                self.schedules = await reports()
            except BrokerError as exc:
                log.warning("could not read the schedules for metrics: %s", exc)
            await anyio.sleep(interval)  # a gauge is sampled on a clock


@dataclass(frozen=True)
class PrometheusServer:
    """A MeterProvider whose metrics are served as Prometheus text on ``/metrics``."""

    provider: MeterProvider
    port: int
    """The port it listens on (the one the system chose, when asked for port 0)."""
    stop: Callable[[], None]


def serve_prometheus(port: int, address: str) -> PrometheusServer:
    """Serve a new MeterProvider's metrics on ``http://address:port/metrics``, from a
    thread of its own. Raises ``OSError`` when the port cannot be bound, ``ImportError``
    without ``asyncq[otel]``."""
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider
    from opentelemetry.sdk.resources import Resource
    from prometheus_client import REGISTRY, start_http_server

    server, thread = start_http_server(port, address, registry=REGISTRY)
    # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES name the service when set.
    attributes = {} if os.environ.get("OTEL_SERVICE_NAME") else {"service.name": "asyncq-worker"}
    resource = Resource.create(attributes)
    provider = SdkMeterProvider(metric_readers=[PrometheusMetricReader()], resource=resource)

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
        provider.shutdown()

    return PrometheusServer(provider, server.server_port, stop)
