"""Tasks: a registered handler, and the typed ways to enqueue it."""

from __future__ import annotations

import inspect
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar

from . import tracing
from .backend import Envelope
from .job import Job
from .retry import Backoff
from .serializer import encode_job, new_job_id

if TYPE_CHECKING:
    from .app import App

__all__ = ["Task", "TaskCall"]

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class EnqueueOptions:
    """Per-call options: when, where, and under which idempotency key."""

    eta: float | None = None
    key: str | None = None
    queue: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


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
    ) -> None:
        if retries < 0:
            raise ValueError("retries must be >= 0")
        if timeout is not None and timeout <= 0:
            raise ValueError("timeout must be > 0 (or None for no timeout)")
        _check_queue(queue)
        self.app = app
        self.fn = fn
        self.name = name
        self.queue = queue
        self.retries = retries
        self.timeout = timeout
        self.backoff = backoff
        self.is_async = inspect.iscoroutinefunction(fn)
        self._signature: inspect.Signature | None = None
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
    ) -> TaskCall[P, R]:
        """Options for the next enqueue: ``delay`` seconds or ``at`` a time (an aware
        datetime or epoch seconds), an idempotency ``key``, another ``queue``, headers."""
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
        return TaskCall(self, EnqueueOptions(eta, key, queue, dict(headers or {})))

    async def enqueue_many(
        self, calls: Iterable[tuple[Any, ...] | Mapping[str, Any]]
    ) -> list[Job[R]]:
        """Send many jobs in one round trip: each item is a tuple of positional arguments
        or a mapping of keyword arguments."""
        return await self._plain.enqueue_many(calls)

    def bind_error(self, args: Any, kwargs: Any) -> str | None:
        """Why ``args``/``kwargs`` do not fit the handler's signature, or None if they do."""
        if self._signature is None:
            try:  # show `a: int`, not `a: 'int'`, for modules with postponed annotations
                self._signature = inspect.signature(self.fn, eval_str=True)
            except Exception:
                self._signature = inspect.signature(self.fn)
        try:
            self._signature.bind(*args, **kwargs)
        except TypeError as exc:
            return f"arguments do not fit {self.name}{self._signature}: {exc}"
        return None


class TaskCall(Generic[P, R]):
    """A task with per-call options attached, from ``task.options(...)``."""

    __slots__ = ("options", "task")

    def __init__(self, task: Task[P, R], options: EnqueueOptions) -> None:
        self.task = task
        self.options = options

    async def enqueue(self, *args: P.args, **kwargs: P.kwargs) -> Job[R]:
        app = self.task.app
        backend = app.backend_for_enqueue()
        if not tracing.active():
            envelope = self._envelope(args, kwargs)
            (job_id,) = await backend.enqueue([envelope])
            return Job(app, job_id, envelope.queue)
        task, opts = self.task, self.options
        queue, headers = opts.queue or task.queue, dict(opts.headers)
        with tracing.send_span(backend.system, queue, task.name, headers) as span:
            envelope = self._envelope(args, kwargs, headers=headers)
            span.set_attribute("messaging.message.id", envelope.id)
            (job_id,) = await backend.enqueue([envelope])
        return Job(app, job_id, envelope.queue)

    async def enqueue_many(
        self, calls: Iterable[tuple[Any, ...] | Mapping[str, Any]]
    ) -> list[Job[R]]:
        calls = list(calls)
        if self.options.key is not None and len(calls) > 1:
            raise ValueError("one idempotency key cannot name several jobs")
        app = self.task.app
        backend = app.backend_for_enqueue()
        task, opts = self.task, self.options
        spans = None
        if tracing.active():
            spans = tracing.BatchSpans(backend.system, opts.queue or task.queue, task.name)
        envelopes = []
        now = time.time()  # one enqueue time for the batch: it is one call
        for call in calls:
            args: tuple[Any, ...]
            kwargs: dict[str, Any]
            if isinstance(call, tuple):
                args, kwargs = call, {}
            elif isinstance(call, Mapping):
                args, kwargs = (), dict(call)
            else:
                raise TypeError(
                    f"enqueue_many takes tuples (positional) or mappings (keyword), "
                    f"got {type(call).__name__}"
                )
            if spans is None:
                envelopes.append(self._envelope(args, kwargs, now))
            else:
                job_id, headers = new_job_id(), dict(opts.headers)
                spans.create(job_id, headers)
                envelopes.append(self._envelope(args, kwargs, now, headers, job_id))
        if not envelopes:
            return []
        if spans is None:
            ids = await backend.enqueue(envelopes)
        else:
            with spans.send():
                ids = await backend.enqueue(envelopes)
        queue = envelopes[0].queue  # one options object: one queue for the whole batch
        return [Job(app, job_id, queue) for job_id in ids]

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
            )
        except TypeError as exc:  # nothing has been sent
            raise TypeError(
                f"arguments of task {task.name!r} cannot be serialized: {exc}"
            ) from None
        return Envelope(job_id, queue, body, task.name, opts.eta, opts.key)


def _check_queue(queue: str) -> None:
    if not isinstance(queue, str) or not queue or queue != queue.strip():
        raise ValueError(f"queue name must be a non-empty string without spaces, got {queue!r}")
