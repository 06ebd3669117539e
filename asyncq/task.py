"""Tasks: a registered handler, and the typed ways to enqueue it."""

from __future__ import annotations

import contextlib
import inspect
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar

import anyio

from . import limits, tracing
from .arguments import Parameters
from .delivery import Envelope
from .errors import AsyncqError, MessageTooLarge
from .job import Job
from .limits import ORDER_HEADER, ConcurrencyLimit, RateLimit, TaskLimits
from .middleware import Outgoing, OutgoingJob
from .retry import Backoff
from .serializer import check_priority, encode_job, new_job_id

if TYPE_CHECKING:
    from .app import App

__all__ = ["Task", "TaskCall"]

P = ParamSpec("P")
R = TypeVar("R")

ExceptionClasses = type[BaseException] | Sequence[type[BaseException]]
"""One exception class or several, as ``retry_on=`` and ``no_retry_on=`` take them."""


@dataclass(frozen=True, slots=True)
class EnqueueOptions:
    """Per-call options: when, where, and under which idempotency key."""

    eta: float | None = None
    key: str | None = None
    queue: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    retries: int | None = None
    timeout: float | None = None
    priority: int | None = None
    """0..9 for this job instead of its task's; None: the task's."""
    scheduled_for: float | None = None
    """The slot of a periodic job; for a delayed one, its ``eta``."""
    connection: object | None = None
    """The caller's database connection whose transaction the jobs are written in."""


class Task(Generic[P, R]):
    """A handler registered on an App. ``await task.enqueue(...)`` takes the handler's own
    arguments, checked by the type checker; options go through ``task.options(...)``."""

    def __init__(
        self,
        app: App,
        fn: Callable[P, Awaitable[R]] | Callable[P, R],
        *,
        name: str,
        queue: str,
        retries: int,
        timeout: float | None,
        backoff: Backoff,
        retry_on: ExceptionClasses | None = None,
        no_retry_on: ExceptionClasses = (),
        result_ttl: float | None = None,
        store_result: bool = True,
        priority: int = 0,
        rate_limit: str | RateLimit | None = None,
        concurrency_limit: int | ConcurrencyLimit | None = None,
    ) -> None:
        _check_retries(retries)
        check_priority(priority)
        _check_timeout(timeout)
        if result_ttl is not None and not result_ttl > 0:
            raise ValueError(f"result_ttl must be a number of seconds > 0, not {result_ttl!r}")
        _check_queue(queue)
        self.app = app
        self.fn = fn
        self.name = name
        self.queue = queue
        self.retries = retries
        self.timeout = timeout
        self.backoff = backoff
        self.retry_on = _exception_classes("retry_on", retry_on)
        """Only these exceptions are retried (None: any); others dead-letter at once."""
        self.no_retry_on = _exception_classes("no_retry_on", no_retry_on) or ()
        """These exceptions dead-letter at once, never retried."""
        self.result_ttl = result_ttl
        """Seconds this task's finished records and results are kept; None: the broker's."""
        self.store_result = store_result
        """False: a success records its status but not the returned value."""
        self.priority = priority
        """0..9, higher first, for this task's jobs unless ``options(priority=)`` says."""
        self.rate_limit = limits.rate_limit(rate_limit)
        """At most so many starts per window, across every worker; None: no limit."""
        self.concurrency_limit = limits.concurrency_limit(concurrency_limit)
        """At most so many running at once, across every worker; None: no limit."""
        self.limits = TaskLimits(fn, name, self.rate_limit, self.concurrency_limit)
        """How a job of this task finds the limits it counts against."""
        self.limited = self.rate_limit is not None or self.concurrency_limit is not None
        concurrency = self.concurrency_limit
        self.ordered = concurrency is not None and concurrency.limit == 1
        """Whether its jobs (of each key) start in enqueue order: a place in line is taken
        for each at enqueue (one more round trip to the store)."""
        """Whether its jobs pass the limiter before they start (most tasks: no)."""
        self.is_async = inspect.iscoroutinefunction(fn)
        self.parameters = Parameters(fn, name)
        self._plain = TaskCall(self, EnqueueOptions())  # no options: built once, not per job
        self.__doc__ = fn.__doc__
        self.__wrapped__ = fn

    def __repr__(self) -> str:
        return f"<Task {self.name} queue={self.queue!r}>"

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Any:
        """Call the handler directly, in this process (handy in unit tests)."""
        return self.fn(*args, **kwargs)

    async def enqueue(self, *args: P.args, **kwargs: P.kwargs) -> Job[R]:
        """Send one job; returns as soon as the broker has it."""
        return await self._plain.enqueue(*args, **kwargs)

    def options(
        self,
        *,
        delay: float | None = None,
        at: datetime | float | None = None,
        key: str | None = None,
        queue: str | None = None,
        headers: Mapping[str, str] | None = None,
        retries: int | None = None,
        timeout: float | None = None,
        priority: int | None = None,
        connection: object | None = None,
    ) -> TaskCall[P, R]:
        """Options for the next enqueue: ``delay`` seconds or ``at`` a time (an aware
        datetime or epoch seconds), an idempotency ``key``, another ``queue``, headers, and
        ``retries``, ``timeout`` and ``priority`` (0..9) for this job instead of the task's.

        ``connection``: a database connection of the caller's (an asyncpg connection, a
        SQLAlchemy ``AsyncConnection`` or ``AsyncSession`` on asyncpg) inside a transaction:
        the jobs are written in it, so a rollback leaves no job and the commit wakes the
        workers. Only a broker in the same database can do that (``postgresql://``); on any
        other it is a ``ValueError``."""
        if delay is not None and at is not None:
            raise ValueError("give delay= or at=, not both")
        eta: float | None = None
        if delay is not None:
            if delay < 0:
                raise ValueError("delay must be >= 0")
            eta = time.time() + delay if delay > 0 else None
        elif isinstance(at, datetime):
            if at.tzinfo is None:
                raise ValueError("at= needs a timezone-aware datetime (e.g. datetime.now(UTC))")
            eta = at.timestamp()
        elif at is not None:
            eta = float(at)
        if key is not None and (not isinstance(key, str) or not key):
            raise ValueError("key must be a non-empty string")
        if queue is not None:
            _check_queue(queue)
        if retries is not None:
            _check_retries(retries)
        _check_timeout(timeout)
        if priority is not None:
            check_priority(priority)
        if connection is not None:
            self.app.backend.check_transaction_connection(connection)
        options = EnqueueOptions(
            eta, key, queue, dict(headers or {}), retries, timeout, priority, eta, connection
        )
        return TaskCall(self, options)

    def retries_error(self, error: BaseException) -> bool:
        """Whether a failure with this exception may be retried (``retry_on``,
        ``no_retry_on``); a timeout counts as ``TimeoutError``."""
        if isinstance(error, self.no_retry_on):
            return False
        return self.retry_on is None or isinstance(error, self.retry_on)

    async def enqueue_many(
        self, calls: Iterable[tuple[Any, ...] | Mapping[str, Any]]
    ) -> list[Job[R]]:
        """Send many jobs in one round trip: each item is a tuple of positional arguments
        or a mapping of keyword arguments."""
        return await self._plain.enqueue_many(calls)

    def bind_error(self, args: Any, kwargs: Any) -> str | None:
        """Why ``args``/``kwargs`` do not fit the handler's signature, or None if they do."""
        if self.parameters.fits(args, kwargs):
            return None
        return self.parameters.problem(args, kwargs)


class TaskCall(Generic[P, R]):
    """A task with per-call options attached, from ``task.options(...)``."""

    __slots__ = ("options", "priority", "task")

    def __init__(self, task: Task[P, R], options: EnqueueOptions) -> None:
        self.task = task
        self.options = options
        self.priority = task.priority if options.priority is None else options.priority
        """The jobs' priority: the options', else the task's (decided once, not per job)."""

    async def enqueue(self, *args: P.args, **kwargs: P.kwargs) -> Job[R]:
        app = self.task.app
        backend = app.backend_for_enqueue()
        parameters = self.task.parameters
        if not parameters.fits(args, kwargs):
            parameters.check(args, kwargs)  # raises TypeError, naming what does not fit
        if self.task.ordered:
            (job_id,) = await self._enqueue_in_line([(args, dict(kwargs))], batch=False)
            return Job(app, job_id, self.options.queue or self.task.queue)
        if not (app.wraps_enqueue or tracing.active()):  # nothing wraps it: straight on
            envelope = self._envelope(args, kwargs)
            if self.options.connection is None:
                (job_id,) = await backend.enqueue([envelope])
            else:
                (job_id,) = await self._store([envelope])
            return Job(app, job_id, envelope.queue)
        job = OutgoingJob(new_job_id(), args, kwargs, dict(self.options.headers))
        (job_id,) = await app.enqueue_chain(self._outgoing([job], batch=False))
        return Job(app, job_id, self.options.queue or self.task.queue)

    async def enqueue_many(
        self, calls: Iterable[tuple[Any, ...] | Mapping[str, Any]]
    ) -> list[Job[R]]:
        app = self.task.app
        app.backend_for_enqueue()  # an App that is not open fails before anything is checked
        task, opts = self.task, self.options
        fits = task.parameters.fits
        split: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
        for call in calls:  # every call is checked before anything is sent
            if isinstance(call, tuple):
                args, kwargs = call, {}
            elif isinstance(call, Mapping):
                args, kwargs = (), dict(call)
            else:
                raise TypeError(
                    f"enqueue_many takes tuples (positional) or mappings (keyword), got "
                    f"{type(call).__name__} at item {len(split)}; nothing was sent"
                )
            if not fits(args, kwargs):
                try:
                    task.parameters.check(args, kwargs)
                except TypeError as exc:
                    message = f"enqueue_many item {len(split)}: {exc}; nothing was sent"
                    raise TypeError(message) from None
            split.append((args, kwargs))
        if opts.key is not None and len(split) > 1:
            raise ValueError("one idempotency key cannot name several jobs")
        if not split:
            return []
        queue = opts.queue or task.queue  # one options object: one queue for the whole batch
        if task.ordered:
            ids = await self._enqueue_in_line(split, batch=True)
        elif not (app.wraps_enqueue or tracing.active()):
            now = time.time()  # one enqueue time for the batch: it is one call
            ids = await self._store([self._envelope(a, k, now) for a, k in split])
        else:
            jobs = [OutgoingJob(new_job_id(), a, k, dict(opts.headers)) for a, k in split]
            ids = await app.enqueue_chain(self._outgoing(jobs, batch=True))
        return [Job(app, job_id, queue) for job_id in ids]

    async def _enqueue_in_line(
        self, calls: list[tuple[tuple[Any, ...], dict[str, Any]]], *, batch: bool
    ) -> list[str]:
        """Enqueue jobs that start in enqueue order: each takes its place in its key's line
        first, carried in its headers."""
        task, app = self.task, self.task.app
        store = app.backend.store
        names = [task.limits.concurrency(args, kwargs) for args, kwargs in calls]
        tickets = await store.take_order_tickets(names)
        jobs = [
            OutgoingJob(new_job_id(), a, k, {**self.options.headers, ORDER_HEADER: str(t)})
            for (a, k), t in zip(calls, tickets, strict=True)
        ]
        try:
            ids = await app.enqueue_chain(self._outgoing(jobs, batch=batch))
        except BaseException:
            # Nothing (or not all) was stored: the line need not wait for these. If the
            # store cannot be told either, the line moves on past them after a while.
            with anyio.CancelScope(shield=True), contextlib.suppress(AsyncqError):
                await store.void_order_tickets(list(zip(names, tickets, strict=True)))
            raise
        # An idempotency key already taken stores nothing: that ticket never asks.
        void = [
            (name, ticket)
            for job, job_id, name, ticket in zip(jobs, ids, names, tickets, strict=True)
            if job_id != job.id
        ]
        if void:
            await store.void_order_tickets(void)
        return ids

    def _outgoing(self, jobs: list[OutgoingJob], *, batch: bool) -> Outgoing:
        task = self.task
        queue = self.options.queue or task.queue
        system = task.app.backend.system
        return Outgoing(task.name, queue, jobs, batch, system, self._send)

    async def _send(self, outgoing: Outgoing) -> list[str]:
        """The enqueue chain's last step: encode the jobs as they are now and send them."""
        now = time.time()
        envelopes = [
            self._envelope(job.args, job.kwargs, now, job.headers, job.id) for job in outgoing.jobs
        ]
        return await self._store(envelopes)

    async def _store(self, envelopes: list[Envelope]) -> list[str]:
        """Hand the jobs to the broker: on its own, or in the caller's transaction."""
        backend = self.task.app.backend_for_enqueue()
        connection = self.options.connection
        if connection is None:
            return await backend.enqueue(envelopes)
        return await backend.enqueue_in_transaction(connection, envelopes)

    def _envelope(
        self,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        now: float | None = None,
        headers: dict[str, str] | None = None,
        job_id: str | None = None,
    ) -> Envelope:
        task, opts = self.task, self.options
        queue = opts.queue or task.queue
        job_id = job_id or new_job_id()
        priority = self.priority
        enqueued_at = time.time() if now is None else now
        try:
            body = encode_job(
                task.app.serializer,
                job_id,
                task.name,
                queue,
                args,
                kwargs,
                opts.headers if headers is None else headers,
                1,
                enqueued_at,
                opts.eta,
                opts.key,
                opts.retries,
                opts.timeout,
                priority,  # positional: a keyword costs the hot path a lookup per job
                opts.scheduled_for,
            )
        except TypeError as exc:  # nothing has been sent
            raise TypeError(
                f"arguments of task {task.name!r} cannot be serialized: {exc}"
            ) from None
        limit = task.app.backend.max_message_size
        if limit is not None and len(body) > limit:
            raise MessageTooLarge(
                f"a job of task {task.name!r} is {_size(len(body))}, and the broker accepts "
                f"at most {_size(limit)}; nothing was sent: pass large data by reference "
                "(a storage key, a database id) instead",
                size=len(body),
                limit=limit,
            )
        # Positional: calling a class with a keyword builds a dict per job.
        return Envelope(job_id, queue, body, task.name, opts.eta, opts.key, priority)


def _size(count: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if count >= scale:
            return f"{count:,} bytes ({count / scale:.1f} {unit})"
    return f"{count:,} bytes"


def _check_retries(retries: int) -> None:
    if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
        raise ValueError(f"retries must be an integer >= 0, not {retries!r}")


def _check_timeout(timeout: float | None) -> None:
    if timeout is not None and not (
        isinstance(timeout, int | float) and not isinstance(timeout, bool) and timeout > 0
    ):
        raise ValueError(f"timeout must be a number of seconds > 0 (or None), not {timeout!r}")


def _exception_classes(
    name: str, classes: ExceptionClasses | None
) -> tuple[type[BaseException], ...] | None:
    if classes is None:
        return None
    found = (classes,) if isinstance(classes, type) else tuple(classes)
    for cls in found:
        if not (isinstance(cls, type) and issubclass(cls, BaseException)):
            raise TypeError(f"{name} takes exception classes, got {cls!r}")
    return found


def _check_queue(queue: str) -> None:
    if not isinstance(queue, str) or not queue or queue != queue.strip():
        raise ValueError(f"queue name must be a non-empty string without spaces, got {queue!r}")
