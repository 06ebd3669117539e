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
* ``on_worker_start()``: a worker starts serving on this backend (once per run), for the
  checks only a consumer needs.
* ``stop_consuming()``: the worker fetches no more (a shutdown); a broker that pushes
  deliveries ahead of ``fetch`` (AMQP's prefetch) stops and hands back what it holds.
* ``renew(deliveries)`` keeps the claim on long-running deliveries fresh; backends whose
  broker tracks consumer liveness itself (AMQP) leave ``lease_renewal_interval`` at None.
  A broker that takes a delivery back after a fixed time whatever the worker does
  (RabbitMQ's consumer timeout) says so in ``ack_deadline``; the worker stops attempts
  before then.
* ``maintain(queues)`` is the upkeep a broker needs from its workers (moving due delayed
  jobs, reclaiming the jobs of lost workers); every worker runs it in its task group.
* Queue stats, ``list_jobs`` (a queue's jobs in one state, paged), the dead-letter queue
  (``dead_letters``, ``purge_dead``; replay is enqueue + purge, done by the App), and a
  queue's purge and removal.
* ``store`` is the :class:`~asyncq.store.JobStore` that keeps job records, cancellations and
  worker heartbeats: the backend itself serves it where the broker can keep records.

Driver exceptions are mapped to :mod:`asyncq.errors` inside the backend and never reach
users raw. Backends are found by URL scheme in the ``asyncq.backends`` entry-point group.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping, Sequence
from importlib.metadata import EntryPoint, entry_points
from typing import Any, ClassVar, TypeVar
from urllib.parse import parse_qsl, urlsplit

import anyio

from .delivery import Delivery, Envelope
from .errors import ConfigurationError
from .records import (
    DeadLetter,
    JobListing,
    JobStatus,
    MinuteCounts,
    QueueStats,
    TrimmedDeadLetters,
)
from .settlement import Outcome, Settlement
from .store import JobStore

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

    supports_priorities: bool = True
    """Whether the broker orders a queue's ready jobs by priority (0..9, higher first, FIFO
    within one). Where it cannot (RabbitMQ quorum queues), a task or job with a priority is
    a ``ConfigurationError`` rather than a wish silently ignored."""

    no_priorities_hint: str = "drop the priority, or use a broker that has priorities"
    """What to do instead, in that error."""

    dead_ttl: float | None = None
    """Seconds a dead letter is kept (URL option ``dead_ttl``); None: until replayed or
    purged."""
    dead_max: int | None = None
    """Dead letters kept per queue at most, the oldest removed first (URL option
    ``dead_max``); None: no bound."""
    retention_interval: float = 1.0
    """Seconds between two ``trim_dead`` calls of a worker, when a bound is set."""

    measures_lag: bool = True
    """Whether ``queue_stats`` tells each queue's ``oldest_pending_age``. A broker that
    cannot without a write per job (RabbitMQ) leaves it None and says False here."""

    @classmethod
    @abc.abstractmethod
    def from_url(cls: type[B], url: str) -> B:
        """Build the backend from its URL, options in the query string."""

    def describe(self) -> str:
        """Where the broker keeps its data, where the URL alone does not say (the absolute
        path of a file named relative to the working directory): a worker's start line and
        ``asyncq stats`` show it. '' by default."""
        return ""

    async def connect(self) -> None:  # noqa: B027 - optional hook
        """Open connections and declare what the broker needs (once per ``async with app``)."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections. Safe to call more than once."""

    async def on_worker_start(self) -> None:  # noqa: B027 - optional hook
        """A worker is starting on this backend: called once per worker run, after
        ``connect`` and before the first fetch. Checks that matter only where jobs are
        consumed (a broker that would lose its queued jobs on a restart) go here rather than
        in ``connect``, which a producer-only App runs too. Log, do not raise: a failed
        check must not stop the worker."""

    # -- producing -------------------------------------------------------------------------
    @abc.abstractmethod
    async def enqueue(self, envelopes: Sequence[Envelope]) -> list[str]: ...

    def check_transaction_connection(self, connection: object) -> None:
        """Raise ``ValueError`` unless ``enqueue_in_transaction`` can use ``connection``
        (``task.options(connection=...)`` asks, before anything is sent)."""
        broker = self.system or type(self).__name__
        raise ValueError(
            f"connection= writes jobs in your database transaction, which the {broker} broker "
            "cannot join: it is for a postgresql:// broker in the same database"
        )

    async def enqueue_in_transaction(
        self, connection: object, envelopes: Sequence[Envelope]
    ) -> list[str]:
        """Store jobs in the caller's open transaction on ``connection``: they exist only
        if it commits. Backends in a database the caller shares override this."""
        self.check_transaction_connection(connection)
        raise AssertionError("unreachable")  # pragma: no cover

    async def complete_in_transaction(
        self, connection: object, delivery: Delivery, result: bytes | None, result_ttl: float | None
    ) -> None:
        """Mark the delivered job succeeded, with ``result``, in the caller's open
        transaction on ``connection`` (``JobContext.complete_in``): it counts only if that
        commits, and the worker's own settle then finds it finished already. Raises
        ``LeaseLost`` when this delivery no longer holds the job."""
        self.check_transaction_connection(connection)
        raise AssertionError("unreachable")  # pragma: no cover

    # -- consuming -------------------------------------------------------------------------
    @abc.abstractmethod
    async def fetch(
        self, queues: Sequence[str], limit: int, *, timeout: float | None
    ) -> list[Delivery]:
        """Wait up to ``timeout`` seconds (None: forever) for jobs; return at most ``limit``."""

    @abc.abstractmethod
    async def settle(self, settlements: Sequence[Settlement]) -> None: ...

    async def stop_consuming(self) -> None:  # noqa: B027 - optional hook
        """The worker will fetch no more: stop taking deliveries and hand back what was
        prefetched (fetched from the broker and not returned by ``fetch``). Deliveries
        ``fetch`` returned stay the worker's, to settle as usual. A later ``fetch`` starts
        consuming again. A no-op where the broker hands out nothing ahead of ``fetch``."""

    async def renew(self, deliveries: Sequence[Delivery]) -> None:  # noqa: B027 - optional
        """Keep the claim on running deliveries; a no-op where the broker tracks liveness."""

    async def maintain(self, queues: Sequence[str]) -> None:
        """Upkeep for ``queues`` that runs as long as a worker does; by default none."""
        await anyio.sleep_forever()

    async def trim_dead(self, queues: Sequence[str]) -> list[TrimmedDeadLetters]:
        """Apply ``dead_ttl`` and ``dead_max`` to the dead-letter queues of ``queues``: remove
        the letters older than ``dead_ttl`` seconds, then the oldest beyond ``dead_max``.
        Returns what was removed (queues where nothing was are left out). A worker calls it
        every ``retention_interval`` seconds while either is set, and counts and logs what
        it returns. A backend that takes these options implements it; by default none."""
        return []

    # -- operations ------------------------------------------------------------------------
    @abc.abstractmethod
    async def queue_stats(self, queues: Sequence[str] | None = None) -> list[QueueStats]:
        """Depth of the given queues, or of every queue the broker knows of."""

    @abc.abstractmethod
    async def dead_letters(
        self, queue: str, *, limit: int = 100, after: str | None = None
    ) -> list[DeadLetter]:
        """Oldest first; ``after`` is the ``cursor`` of the last entry of the previous page."""

    can_run_now: bool = False
    """True where :meth:`run_now` can move a waiting job to the front of its time."""

    async def run_now(self, queue: str, job_id: str) -> bool:
        """Make a job that waits for its time (delayed, snoozed, waiting for a retry or on a
        limit) due now, so the next worker to look takes it; False if it was not waiting
        (unknown, queued, running or finished). A broker that cannot raises
        ``ConfigurationError``."""
        raise ConfigurationError(f"{self.describe()} cannot move a waiting job forward")

    async def dead_letter(self, queue: str, job_id: str) -> DeadLetter | None:
        """The newest dead letter of ``job_id`` in ``queue``, or None. This default reads the
        whole dead-letter queue page by page; a broker with an index by job id (or a way to
        read newest first) overrides it."""
        found, after = None, None
        while True:
            page = await self.dead_letters(queue, limit=1000, after=after)
            found = next((d for d in reversed(page) if d.id == job_id), found)
            if len(page) < 1000:
                return found
            after = page[-1].cursor

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

    counts_minutes: bool = False
    """True where :meth:`minute_counts` gives per-minute counts (see :mod:`asyncq.throughput`)."""

    async def minute_counts(self, queues: Sequence[str], minutes: int) -> list[MinuteCounts]:
        """The counts of the last ``minutes`` minutes (the current one included) of each
        of ``queues``, oldest first; minutes in which nothing ended are left out. Kept for
        :data:`~asyncq.throughput.KEPT` seconds; a backend that keeps none returns []."""
        return []

    @abc.abstractmethod
    async def list_jobs(
        self, queue: str, status: JobStatus, *, limit: int = 100, after: str | None = None
    ) -> list[JobListing]:
        """Up to ``limit`` of the queue's jobs in ``status`` (one of
        :data:`~asyncq.records.LISTABLE`), in the order the broker keeps them (the oldest or
        soonest first); ``after`` is the ``cursor`` of the last job of the previous page.
        A job that changes state between pages may be missed or listed twice. A broker that
        cannot tell which jobs run without its store (RabbitMQ) raises ``ConfigurationError``
        for RUNNING when its store is not available."""

    # -- records ---------------------------------------------------------------------------
    @property
    @abc.abstractmethod
    def store(self) -> JobStore:
        """Where this backend keeps job records, cancellations and heartbeats."""


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
    found = entry_points(group=ENTRY_POINT_GROUP, name=scheme)
    if not found:
        known = ", ".join(sorted(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)))
        raise ConfigurationError(
            f"no asyncq backend is installed for '{scheme}://' (installed: {known})"
        )
    entry = next(iter(found))
    try:
        cls = entry.load()
    except ImportError as exc:
        hint = install_hint(entry, exc.name)
        raise ConfigurationError(
            f"the '{scheme}://' backend cannot be imported ({exc}){hint}"
        ) from None
    if not (isinstance(cls, type) and issubclass(cls, Backend)):
        raise ConfigurationError(f"entry point {entry.value!r} is not an asyncq Backend")
    return cls.from_url(url)


def install_hint(entry: EntryPoint, missing: str | None) -> str:
    """How to install what an entry point's backend lacks, read from the distribution that
    registered it: the extra whose requirements name the missing module ("; install it with:
    pip install 'asyncq[redis]'"); '' when no extra names it."""
    dist = entry.dist
    if dist is None:
        return ""
    name = dist.metadata["Name"]
    wanted = _normalize(missing or "")
    extras: dict[str, int] = {}  # extra -> how many requirements it has
    naming: set[str] = set()  # the extras that require the missing module
    for requirement in dist.requires or ():
        project, _, marker = requirement.partition(";")
        extra = _extra_of(marker)
        if extra:
            extras[extra] = extras.get(extra, 0) + 1
            if wanted and _requirement_name(project) == wanted:
                naming.add(extra)
    if not naming:
        return ""
    # The narrowest extra that brings it: 'redis' rather than 'amqp' or 'dev', which
    # bring it too.
    extra = min(naming, key=lambda e: (extras[e], e))
    return f"; install it with: pip install '{name}[{extra}]'"


def _normalize(name: str) -> str:
    # Module and project names differ in case and in '-', '_' and '.' (aio_pika, aio-pika).
    return name.split(".")[0].lower().replace("-", "_").replace(".", "_")


def _requirement_name(project: str) -> str:
    for stop in "<>=!~[ (":
        project = project.split(stop)[0]
    return _normalize(project.strip())


def _extra_of(marker: str) -> str | None:
    """The extra a requirement's environment marker names (``extra == "redis"``)."""
    if "extra" not in marker:
        return None
    _, _, rest = marker.partition("extra")
    rest = rest.strip().removeprefix("==").strip()
    return rest.strip("'\" ").split("'")[0].split('"')[0] or None
