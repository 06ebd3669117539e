"""How a worker runs: one frozen, validated object, built once (by ``asyncq run`` from its
flags, or in code) and passed unchanged to the App, the Worker and the supervisor."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypedDict

__all__ = ["WorkerOptions", "WorkerOptionsOverrides"]


@dataclass(frozen=True, slots=True)
class WorkerOptions:
    """A worker's settings; every field has a default, and a bad value is a ``ValueError``
    naming it, raised here, before anything starts."""

    queues: tuple[str, ...] | None = None
    """The queues to serve; None: every queue the App's tasks use."""
    concurrency: int = 10
    """Jobs run at once."""
    prefetch: int | None = None
    """Jobs held beyond ``concurrency``, waiting to start (at most ``concurrency``); None: a
    quarter of ``concurrency``."""
    burst: bool = False
    """Stop once the queues are drained."""
    schedules: bool = True
    """Fire the App's periodic schedules (every worker does, unless told not to)."""
    shutdown_timeout: float = 30.0
    """Seconds in-flight jobs get to finish at a graceful stop before they go back."""
    handle_signals: bool = False
    """Stop gracefully on SIGTERM/SIGINT (the CLI's worker does)."""
    heartbeat_interval: float = 10.0
    """Seconds between heartbeats; a worker is gone after three missed."""
    fetch_timeout: float = 5.0
    """Seconds one fetch waits on the broker before it asks again."""
    metrics_interval: float = 5.0
    """Seconds between reads of the queue depths for metrics."""
    wait_for_broker: float = 0.0
    """At start, seconds to keep trying a broker that cannot be reached; 0: fail at once."""
    max_jobs: int | None = None
    """Recycle the worker after it has taken this many jobs (see :mod:`asyncq.recycling`);
    None: never."""
    max_memory: float | None = None
    """Recycle the worker once its process's resident memory is above this many megabytes;
    None: never."""
    meter_provider: Any = None
    """The OpenTelemetry MeterProvider to record into; None: the global one, when an SDK has
    set it (else nothing is recorded)."""

    def __post_init__(self) -> None:
        if self.queues is not None:
            queues = tuple(self.queues)
            object.__setattr__(self, "queues", queues or None)
            if not all(isinstance(q, str) and q for q in queues):
                raise ValueError("queues must be non-empty queue names")
        if self.concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        if self.prefetch is not None and not 0 <= self.prefetch <= self.concurrency:
            raise ValueError("prefetch must be between 0 and concurrency")
        if self.shutdown_timeout < 0:
            raise ValueError("shutdown_timeout must be >= 0")
        for name in ("heartbeat_interval", "metrics_interval", "fetch_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0 seconds")
        if not self.wait_for_broker >= 0:
            raise ValueError("wait_for_broker must be >= 0 seconds")
        if self.max_jobs is not None and (type(self.max_jobs) is not int or self.max_jobs < 1):
            raise ValueError(f"max_jobs must be an integer >= 1, not {self.max_jobs!r}")
        if self.max_memory is not None and not self.max_memory > 0:
            raise ValueError(f"max_memory must be > 0 megabytes, not {self.max_memory!r}")

    @property
    def slots(self) -> int:
        """Jobs held at most: ``concurrency`` running plus the prefetched."""
        prefetch = self.concurrency // 4 if self.prefetch is None else self.prefetch
        return self.concurrency + prefetch

    def replace(self, **changes: Any) -> WorkerOptions:
        """A copy with ``changes``, validated like the original (an unknown name is a
        ``TypeError``)."""
        return dataclasses.replace(self, **changes)

    def command_line(self) -> list[str]:
        """These options as ``asyncq run`` flags: what a supervised worker process is given.
        ``handle_signals`` and ``meter_provider`` do not travel (a process handles its own
        signals and serves its own metrics)."""
        args = ["--concurrency", str(self.concurrency)]
        args += ["--prefetch", str(self.prefetch)] if self.prefetch is not None else []
        args += ["--shutdown-timeout", repr(self.shutdown_timeout)]
        args += ["--queues", ",".join(self.queues)] if self.queues else []
        args += ["--burst"] if self.burst else []
        args += [] if self.schedules else ["--no-schedules"]
        args += ["--heartbeat-interval", repr(self.heartbeat_interval)]
        args += ["--metrics-interval", repr(self.metrics_interval)]
        args += ["--wait-for-broker", repr(self.wait_for_broker)]
        args += ["--max-jobs", str(self.max_jobs)] if self.max_jobs is not None else []
        args += ["--max-memory", repr(self.max_memory)] if self.max_memory is not None else []
        return args


class WorkerOptionsOverrides(TypedDict, total=False):
    """The fields of :class:`WorkerOptions`, as keyword arguments of ``App.worker`` and
    ``App.run_worker``."""

    queues: Sequence[str] | None
    concurrency: int
    prefetch: int | None
    burst: bool
    schedules: bool
    shutdown_timeout: float
    handle_signals: bool
    heartbeat_interval: float
    fetch_timeout: float
    metrics_interval: float
    wait_for_broker: float
    max_jobs: int | None
    max_memory: float | None
    meter_provider: Any
