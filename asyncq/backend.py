"""The Backend contract: what a broker integration implements, and how one is found by URL.

The worker owns concurrency, timeouts, the retry policy and tracing; a backend owns
storage and delivery. The contract is batch-first, so a backend can serve many jobs per
round trip:

* ``enqueue(envelopes)`` stores a batch and returns each job's id (an existing job's id when
  an idempotency key matched).
* ``fetch(queues, limit, timeout)`` waits (blocking on the broker, never polling) until at
  least one job is ready and returns at most ``limit`` deliveries: ``limit`` is the worker's
  free slots, which is how backpressure reaches the broker.
* ``settle(settlements)`` finishes a batch of deliveries: succeeded (store the result, ack),
  retry (schedule the next attempt and ack the current delivery in one atomic step), dead
  (move to the dead-letter queue, ack), cancelled (ack), or release (give the job back,
  unacknowledged, for another worker: a graceful shutdown). Until a delivery is settled the
  broker must redeliver it if its worker goes away.
* ``renew(deliveries)`` keeps the claim on long-running deliveries fresh; backends whose
  broker tracks consumer liveness itself (AMQP) leave ``lease_renewal_interval`` at None.
  A broker that takes a delivery back after a fixed time whatever the worker does
  (RabbitMQ's consumer timeout) says so in ``ack_deadline``; the worker stops attempts
  before then.
* ``watch_cancellations(on_cancel)`` calls ``on_cancel(job_id)`` when a user cancels a job,
  so the worker running it can cancel its scope.
* ``maintain(queues)`` is the upkeep a broker needs from its workers (moving due delayed
  jobs, reclaiming the jobs of lost workers); every worker runs it in its task group.
* Job records (``job_info``, ``wait_finished``, ``cancel``), queue stats, the dead-letter
  queue (``dead_letters``, ``purge_dead``; replay is enqueue + purge, done by the App) and
  worker heartbeats (``heartbeat``, ``deregister``, ``workers``).

A job belongs to its queue: its record and its idempotency key live with the queue (one
Redis Cluster slot per queue), so the record calls name the queue as well as the job id.

Driver exceptions are mapped to :mod:`asyncq.errors` inside the backend and never reach
users raw. Backends are found by URL scheme in the ``asyncq.backends`` entry-point group.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, ClassVar, TypeVar
from urllib.parse import parse_qsl, urlsplit

import anyio

from .errors import ConfigurationError, ErrorInfo
from .records import DeadLetter, JobInfo, QueueStats, WorkerInfo

__all__ = [
    "Backend",
    "Delivery",
    "Envelope",
    "Outcome",
    "Settlement",
    "parse_url_options",
    "resolve_backend",
]

ENTRY_POINT_GROUP = "asyncq.backends"

# Schemes whose integration needs an optional dependency, and the extra that brings it.
_EXTRAS = {"redis": "redis", "rediss": "redis", "amqp": "amqp", "amqps": "amqp"}


@dataclass(frozen=True, slots=True)
class Envelope:
    """A job on its way into the broker: the encoded message and what the broker indexes."""

    id: str
    queue: str
    body: bytes
    task: str = ""
    eta: float | None = None
    """Epoch seconds before which the job must not run; None runs it at once."""
    key: str | None = None
    """Idempotency key, scoped to the queue: while a job with this key is queued, running or
    succeeded (within the result TTL), enqueueing the key again returns that job's id and
    stores nothing."""
    replay: bool = False
    """A dead (or cancelled) job sent again under its own id: its old record is replaced.
    Any other envelope with the id of a job the broker knows stores nothing."""


@dataclass(slots=True)
class Delivery:
    """A job handed to one worker, held until settled."""

    id: str
    queue: str
    body: bytes
    receipt: Any = None
    """The backend's own handle (stream entry id, delivery tag, ...)."""
    redelivered: bool = False
    """True when an earlier delivery of this job went to a worker that was lost."""


class Outcome(enum.Enum):
    SUCCEEDED = "succeeded"
    RETRY = "retry"
    DEAD = "dead"
    CANCELLED = "cancelled"
    RELEASE = "release"


@dataclass(slots=True)
class Settlement:
    """How one delivery ended; see the module docstring for what each outcome does."""

    delivery: Delivery
    outcome: Outcome
    result: bytes | None = None
    """SUCCEEDED: the serialized return value."""
    retry_body: bytes | None = None
    """RETRY: the next attempt's message (attempt + 1)."""
    eta: float | None = None
    """RETRY: when the next attempt may run."""
    error: ErrorInfo | None = None
    """RETRY and DEAD: why the attempt failed."""
    task: str = ""
    attempt: int = 1
    result_ttl: float | None = None
    """SUCCEEDED, DEAD, CANCELLED: seconds to keep the job's record (and result), instead of
    the backend's ``result_ttl``; the task's own ``result_ttl``."""


B = TypeVar("B", bound="Backend")


class Backend(abc.ABC):
    """Base class of broker integrations. Subclasses implement every abstract method."""

    system: ClassVar[str] = ""
    """The broker's name for tracing (``messaging.system``): "redis", "rabbitmq", ..."""

    lease_renewal_interval: float | None = None
    """Seconds between ``renew()`` calls for running jobs; None: the broker needs none."""

    max_message_size: int | None = None
    """The largest job message, in bytes, the broker accepts (known once connected, where it
    depends on the server); a larger one is refused at enqueue with ``MessageTooLarge``
    before anything is sent. None: no known limit."""

    in_process: ClassVar[bool] = False
    """True for a broker that lives inside one process (``memory://``): no other process
    reaches it, so a command-line tool on it sees only what that one command did."""

    ack_deadline: float | None = None
    """Seconds a delivery may stay unacknowledged before the broker takes it back from a
    live worker and delivers it again; None: no such limit. The worker stops attempts
    before then (see :mod:`asyncq.deadlines`)."""

    ack_deadline_name: ClassVar[str] = "the broker's acknowledgement deadline"
    """What the deadline is called, in error messages: "RabbitMQ's consumer_timeout"."""

    ack_deadline_hint: str = "raise the broker's acknowledgement deadline"
    """How to allow longer attempts, in error messages."""

    @classmethod
    @abc.abstractmethod
    def from_url(cls: type[B], url: str) -> B:
        """Build the backend from its URL, options in the query string."""

    async def connect(self) -> None:  # noqa: B027 - optional hook
        """Open connections and declare what the broker needs (once per ``async with app``)."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections. Safe to call more than once."""

    # -- producing -------------------------------------------------------------------------
    @abc.abstractmethod
    async def enqueue(self, envelopes: Sequence[Envelope]) -> list[str]: ...

    # -- consuming -------------------------------------------------------------------------
    @abc.abstractmethod
    async def fetch(
        self, queues: Sequence[str], limit: int, *, timeout: float | None
    ) -> list[Delivery]:
        """Wait up to ``timeout`` seconds (None: forever) for jobs; return at most ``limit``."""

    @abc.abstractmethod
    async def settle(self, settlements: Sequence[Settlement]) -> None: ...

    async def renew(self, deliveries: Sequence[Delivery]) -> None:  # noqa: B027 - optional
        """Keep the claim on running deliveries; a no-op where the broker tracks liveness."""

    async def maintain(self, queues: Sequence[str]) -> None:
        """Upkeep for ``queues`` that runs as long as a worker does; by default none."""
        await anyio.sleep_forever()

    @abc.abstractmethod
    async def watch_cancellations(self, on_cancel: Callable[[str], None]) -> None:
        """Call ``on_cancel(job_id)`` for each cancellation request, until cancelled."""

    # -- job records -----------------------------------------------------------------------
    @abc.abstractmethod
    async def job_info(self, job_id: str, queue: str) -> JobInfo | None: ...

    @abc.abstractmethod
    async def wait_finished(self, job_id: str, queue: str, timeout: float | None) -> JobInfo | None:
        """Wait, without polling, until the job is finished; None if it is unknown.

        Raises ``TimeoutError`` when ``timeout`` passes first."""

    @abc.abstractmethod
    async def cancel(self, job_id: str, queue: str) -> bool:
        """Cancel a queued, scheduled or running job; False if it had already finished."""

    # -- operations ------------------------------------------------------------------------
    @abc.abstractmethod
    async def queue_stats(self, queues: Sequence[str] | None = None) -> list[QueueStats]:
        """Depth of the given queues, or of every queue the broker knows of."""

    @abc.abstractmethod
    async def dead_letters(
        self, queue: str, *, limit: int = 100, after: str | None = None
    ) -> list[DeadLetter]:
        """Oldest first; ``after`` is the ``cursor`` of the last entry of the previous page."""

    @abc.abstractmethod
    async def purge_dead(self, queue: str, ids: Sequence[str] | None = None) -> int:
        """Delete the oldest entry of each given job id (every entry with None); return how
        many were deleted. Only the oldest: a replayed job that died again meanwhile has a
        newer entry, which the replay's own purge must leave alone."""

    @abc.abstractmethod
    async def purge_queue(self, queue: str, *, limit: int = 1000) -> int:
        """Cancel up to ``limit`` of the queue's waiting jobs (queued, scheduled, or waiting
        for a retry; not those running, not dead letters): they never run, their records
        say CANCELLED and their idempotency keys are free. Returns how many; 0 once none
        are left. The App calls it until then."""

    @abc.abstractmethod
    async def remove_queue(self, queue: str) -> None:
        """Remove what the broker keeps for an empty queue (its stream or RabbitMQ queues,
        its place among the known queues). The App checks first that it is empty and that
        no live worker serves it."""

    @abc.abstractmethod
    async def heartbeat(self, worker: WorkerInfo, ttl: float) -> None: ...

    @abc.abstractmethod
    async def deregister(self, worker_id: str) -> None: ...

    @abc.abstractmethod
    async def workers(self, *, include_gone: bool = False) -> list[WorkerInfo]:
        """Workers whose last heartbeat is younger than its TTL; with ``include_gone``, also
        those whose heartbeat expired within ``GONE_RETENTION`` (``gone=True``) and that did
        not deregister."""


def parse_url_options(url: str, allowed: Mapping[str, Callable[[str], Any]]) -> dict[str, Any]:
    """Parse a broker URL's query string, converting each option; unknown ones are an error."""
    options: dict[str, Any] = {}
    for name, raw in parse_qsl(urlsplit(url).query, keep_blank_values=True):
        convert = allowed.get(name)
        if convert is None:
            known = ", ".join(sorted(allowed)) or "none"
            raise ConfigurationError(
                f"unknown option {name!r} in broker URL {redact_url(url)!r} (known: {known})"
            )
        try:
            options[name] = convert(raw)
        except ValueError as exc:
            raise ConfigurationError(
                f"bad value {raw!r} for option {name!r} in broker URL: {exc}"
            ) from None
    return options


def positive_float(raw: str) -> float:
    value = float(raw)
    if not value > 0:
        raise ValueError("must be a number > 0")
    return value


def positive_int(raw: str) -> int:
    value = int(raw)
    if value < 1:
        raise ValueError("must be an integer >= 1")
    return value


def redact_url(url: str) -> str:
    """The URL with its password replaced, for error messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def resolve_backend(url: str) -> Backend:
    """Build the backend for ``url`` from the entry point registered for its scheme."""
    scheme = urlsplit(url).scheme
    if not scheme:
        raise ConfigurationError(
            f"broker URL {redact_url(url)!r} has no scheme; expected e.g. 'memory://' "
            "or 'redis://127.0.0.1:6379/0'"
        )
    extra = _EXTRAS.get(scheme)
    hint = f"; install it with: pip install 'asyncq[{extra}]'" if extra else ""
    found = entry_points(group=ENTRY_POINT_GROUP, name=scheme)
    if not found:
        known = ", ".join(sorted(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)))
        raise ConfigurationError(
            f"no asyncq backend is installed for '{scheme}://' (installed: {known}){hint}"
        )
    entry = next(iter(found))
    try:
        cls = entry.load()
    except ImportError as exc:
        raise ConfigurationError(
            f"the '{scheme}://' backend cannot be imported ({exc}){hint}"
        ) from None
    if not (isinstance(cls, type) and issubclass(cls, Backend)):
        raise ConfigurationError(f"entry point {entry.value!r} is not an asyncq Backend")
    return cls.from_url(url)
