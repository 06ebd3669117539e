"""The App: a task registry bound to one backend, and the entry point to everything else."""

from __future__ import annotations

import inspect
import os
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import timedelta
from types import SimpleNamespace, TracebackType
from typing import Any, ParamSpec, Protocol, Self, TypeVar, Unpack, overload

import anyio

from .backend import Backend, redact_url, resolve_backend
from .errors import ConfigurationError, TaskNotFound
from .job import Job
from .limits import ConcurrencyLimit, RateLimit
from .middleware import EnqueueNext, Middleware, enqueue_chain
from .operations import Operations
from .operator_calls import OperatorCalls
from .periodic import add_schedule
from .retry import Backoff
from .schedules import Schedule
from .serializer import OrjsonSerializer, Serializer
from .sqlite.settings import DEFAULT_URL as DEFAULT_SQLITE_URL
from .task import ExceptionClasses, Task, _check_queue
from .worker import Worker
from .worker_options import WorkerOptions, WorkerOptionsOverrides

__all__ = ["App", "State"]

# Dead letters are read this many at a time; a queue is purged this many jobs a step.
_DLQ_PAGE = 500
_PURGE_BATCH = 1000

P = ParamSpec("P")
R = TypeVar("R")

DEFAULT_BROKER = DEFAULT_SQLITE_URL
"""The broker when neither the App nor $ASYNCQ_BROKER names one: the embedded one, a SQLite
file in the working directory, which every process started there shares."""

Lifespan = Callable[["App"], AbstractAsyncContextManager[None]]


class State(SimpleNamespace):
    """Attributes a lifespan sets (clients, pools) for handlers to read: ``app.state.db``."""


class TaskDecorator(Protocol):
    @overload
    def __call__(self, __fn: Callable[P, Coroutine[Any, Any, R]]) -> Task[P, R]: ...
    @overload
    def __call__(self, __fn: Callable[P, R]) -> Task[P, R]: ...


class App(OperatorCalls):
    """Tasks, a broker, and defaults for both.

    ``broker`` is a URL (``redis://...``, ``amqp://...``, ``memory://``) resolved through the
    ``asyncq.backends`` entry points, or a :class:`Backend` instance; omitted, it is
    ``$ASYNCQ_BROKER`` or the embedded default, ``sqlite:///asyncq.db`` (a file in the working
    directory, shared by the processes of this host started there). ``retries``, ``timeout``
    and ``backoff`` are the defaults for tasks that do not set their own. ``middleware``
    wraps every enqueue and every attempt (see :mod:`asyncq.middleware`).
    """

    def __init__(
        self,
        broker: str | Backend | None = None,
        *,
        serializer: Serializer | None = None,
        default_queue: str = "default",
        retries: int = 3,
        timeout: float | None = None,
        backoff: Backoff | None = None,
        shutdown_timeout: float = 30.0,
        middleware: Sequence[Middleware] = (),
    ) -> None:
        _check_queue(default_queue)
        for link in middleware:
            if not isinstance(link, Middleware):
                raise TypeError(f"middleware must be asyncq.Middleware instances, got {link!r}")
        self.middleware: tuple[Middleware, ...] = tuple(middleware)
        """Around every enqueue and every attempt, first outermost (see asyncq.middleware)."""
        self._operations = Operations(self)
        self._enqueue_chain = enqueue_chain(self.middleware)
        self.wraps_enqueue = any(type(m).enqueue is not Middleware.enqueue for m in self.middleware)
        """Whether any middleware wraps enqueue; if not, and tracing is off, an enqueue goes
        straight to the backend."""
        self.serializer: Serializer = serializer or OrjsonSerializer()
        self.default_queue = default_queue
        self.retries = retries
        self.timeout = timeout
        self.backoff = backoff or Backoff()
        self.shutdown_timeout = shutdown_timeout
        self.tasks: dict[str, Task[Any, Any]] = {}
        self.schedules: dict[str, Schedule] = {}
        """The periodic schedules every worker of this App fires, by name."""
        self.state = State()
        self._lifespan: Lifespan | None = None
        self._backend: Backend | None = None
        self._broker_url = ""
        self._opened = 0
        self.use_broker(broker)

    def __repr__(self) -> str:
        return f"<App broker={self.broker_url!r} tasks={len(self.tasks)}>"

    # -- broker ----------------------------------------------------------------------------
    def use_broker(self, broker: str | Backend | None) -> None:
        """Point the App at another broker; only while it is not open (the CLI's --broker)."""
        if self._opened:
            raise RuntimeError("cannot change the broker of an open App")
        if isinstance(broker, Backend):
            self._backend, self._broker_url = broker, f"{broker.system}://"
            self.broker_is_default = False
            return
        url = broker or os.environ.get("ASYNCQ_BROKER") or DEFAULT_BROKER
        if not isinstance(url, str):
            raise ConfigurationError(f"broker must be a URL or a Backend, got {broker!r}")
        self._backend, self._broker_url = None, url
        self.broker_is_default = not broker and not os.environ.get("ASYNCQ_BROKER")
        """True when no broker was named (neither here nor in $ASYNCQ_BROKER): the App is on
        the embedded default."""

    @property
    def broker_url(self) -> str:
        """The broker URL with any password masked."""
        return redact_url(self._broker_url)

    def describe_broker(self) -> str:
        """The broker for people: its URL, where its data lives if the URL does not say,
        and whether it is the embedded default."""
        where = self.backend.describe()
        text = f"{self.broker_url} ({where})" if where else self.broker_url
        if self.broker_is_default:
            text += ", the embedded default (shared by this host's processes that use this file)"
        return text

    @property
    def backend(self) -> Backend:
        if self._backend is None:
            self._backend = resolve_backend(self._broker_url)
        return self._backend

    def backend_for_enqueue(self) -> Backend:
        if not self._opened:
            raise RuntimeError(
                "the App is not open: enqueue inside `async with app:` (or a worker, or a "
                "FastAPI lifespan that enters the app)"
            )
        return self.backend

    @property
    def enqueue_chain(self) -> EnqueueNext:
        """The enqueue chain: tracing, then the App's middleware, then the send. A task
        skips it while ``wraps_enqueue`` is False and tracing is off."""
        return self._enqueue_chain

    async def __aenter__(self) -> Self:
        if self._opened == 0:
            self._check_priorities()
            try:
                await self.backend.connect()
            except BaseException:
                # A connect that failed part way may hold connections (AMQP's to its record
                # store, with RabbitMQ down): release them, so a retry starts from nothing.
                with anyio.CancelScope(shield=True):
                    await self.backend.close()
                raise
        self._opened += 1
        return self

    def _check_priorities(self) -> None:
        """A task with a priority on a broker without priorities fails at open, not later."""
        backend = self.backend
        if backend.supports_priorities:
            return
        for task in self.tasks.values():
            if task.priority:
                raise ConfigurationError(
                    f"task {task.name!r} has priority={task.priority}, but the broker at "
                    f"{self.broker_url} cannot order jobs by priority: "
                    f"{backend.no_priorities_hint}"
                )

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._opened -= 1
        if self._opened == 0:
            with anyio.CancelScope(shield=True):
                await self.backend.close()

    # -- tasks -----------------------------------------------------------------------------
    @overload
    def task(self, __fn: Callable[P, Coroutine[Any, Any, R]]) -> Task[P, R]: ...
    @overload
    def task(self, __fn: Callable[P, R]) -> Task[P, R]: ...
    @overload
    def task(
        self,
        *,
        name: str | None = None,
        queue: str | None = None,
        retries: int | None = None,
        timeout: float | None = None,
        backoff: Backoff | None = None,
        retry_on: ExceptionClasses | None = None,
        no_retry_on: ExceptionClasses = (),
        result_ttl: float | None = None,
        store_result: bool = True,
        priority: int = 0,
        rate_limit: str | RateLimit | None = None,
        concurrency_limit: int | ConcurrencyLimit | None = None,
    ) -> TaskDecorator: ...

    def task(
        self,
        __fn: Callable[..., Any] | None = None,
        *,
        name: str | None = None,
        queue: str | None = None,
        retries: int | None = None,
        timeout: float | None = None,
        backoff: Backoff | None = None,
        retry_on: ExceptionClasses | None = None,
        no_retry_on: ExceptionClasses = (),
        result_ttl: float | None = None,
        store_result: bool = True,
        priority: int = 0,
        rate_limit: str | RateLimit | None = None,
        concurrency_limit: int | ConcurrencyLimit | None = None,
    ) -> Any:
        """Register a handler, as ``@app.task`` or ``@app.task(name=..., queue=..., ...)``.

        The name defaults to ``module.qualname``; it is what travels in the job, so keep it
        stable across deploys. ``retry_on`` retries only those exceptions (others go to the
        dead-letter queue at once), ``no_retry_on`` never retries those; ``result_ttl``
        keeps this task's finished records for so many seconds instead of the broker's
        default, and ``store_result=False`` records a success without its value.
        ``priority`` (0..9, default 0) orders the jobs of a queue: a worker starts the
        highest first, FIFO within a priority. ``rate_limit`` (``"100/s"``, ``"10/m"``,
        ``"1000/h"`` or a :class:`~asyncq.RateLimit`) and ``concurrency_limit`` (an int or a
        :class:`~asyncq.ConcurrencyLimit`) hold back its jobs across every worker; a job
        over a limit waits, queued, without spending an attempt or a worker slot.
        """

        def register(fn: Callable[..., Any]) -> Task[Any, Any]:
            task_name = name or f"{fn.__module__}.{fn.__qualname__}"
            if task_name in self.tasks:
                raise ValueError(f"a task named {task_name!r} is already registered")
            task: Task[Any, Any] = Task(
                self,
                fn,
                name=task_name,
                queue=queue or self.default_queue,
                retries=self.retries if retries is None else retries,
                timeout=self.timeout if timeout is None else timeout,
                backoff=backoff or self.backoff,
                retry_on=retry_on,
                no_retry_on=no_retry_on,
                result_ttl=result_ttl,
                store_result=store_result,
                priority=priority,
                rate_limit=rate_limit,
                concurrency_limit=concurrency_limit,
            )
            self.tasks[task_name] = task
            return task

        return register if __fn is None else register(__fn)

    def periodic(
        self,
        cron: str | None = None,
        *,
        every: float | timedelta | None = None,
        name: str | None = None,
        timezone: str | None = None,
        catch_up: bool = False,
        overlap: bool = True,
        **task_options: Any,
    ) -> Callable[[Callable[[], Any]], Task[[], Any]]:
        """Register a no-argument handler as a task and fire it on a schedule: a ``cron``
        expression (in ``timezone``, UTC by default) or ``every`` seconds. ``name`` names
        both; ``task_options`` are :meth:`task`'s (queue, retries, ...)."""

        def register(fn: Callable[[], Any]) -> Task[[], Any]:
            task: Task[[], Any] = self.task(name=name, **task_options)(fn)
            try:
                self.schedule(
                    task,
                    cron=cron,
                    every=every,
                    name=task.name,
                    timezone=timezone,
                    queue=task.queue,
                    catch_up=catch_up,
                    overlap=overlap,
                )
            except ValueError:
                del self.tasks[task.name]  # nothing of a refused schedule stays registered
                raise
            return task

        return register

    def schedule(
        self,
        task: Task[Any, Any],
        cron: str | None = None,
        *,
        every: float | timedelta | None = None,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        name: str | None = None,
        timezone: str | None = None,
        queue: str | None = None,
        catch_up: bool = False,
        overlap: bool = True,
    ) -> Schedule:
        """Fire an existing task with ``args``/``kwargs`` on a schedule (see
        :meth:`periodic`); ``name`` defaults to the task's. ``ValueError`` if anything is
        wrong with it (see asyncq/periodic.py for how each slot is enqueued once)."""
        return add_schedule(
            self,
            task,
            cron=cron,
            every=every,
            args=args,
            kwargs=kwargs,
            name=name,
            timezone=timezone,
            queue=queue,
            catch_up=catch_up,
            overlap=overlap,
        )

    @property
    def queues(self) -> tuple[str, ...]:
        """The queues the registered tasks use (the default queue when there are none)."""
        return tuple(sorted({t.queue for t in self.tasks.values()})) or (self.default_queue,)

    def get_task(self, name: str) -> Task[Any, Any]:
        """The task registered under ``name``; :class:`TaskNotFound` names the known ones."""
        task = self.tasks.get(name)
        if task is None:
            known = ", ".join(sorted(self.tasks)) or "none"
            raise TaskNotFound(f"no task named {name!r} (known tasks: {known})")
        return task

    def get_job(self, job_id: str, queue: str | None = None) -> Job[Any]:
        """A handle on a job enqueued earlier, by its id and queue (default: the default queue)."""
        return Job(self, job_id, queue or self.default_queue)

    # -- lifespan --------------------------------------------------------------------------
    def lifespan(self, fn: Callable[[App], Any]) -> Callable[[App], Any]:
        """Register what each worker opens around job processing: an async context manager
        factory, or an async generator function, taking the App."""
        self._lifespan = asynccontextmanager(fn) if inspect.isasyncgenfunction(fn) else fn
        return fn

    @asynccontextmanager
    async def run_lifespan(self) -> AsyncIterator[None]:
        if self._lifespan is None:
            yield
        else:
            async with self._lifespan(self):
                yield

    # -- workers ---------------------------------------------------------------------------
    @asynccontextmanager
    async def worker(
        self,
        options: WorkerOptions | None = None,
        **overrides: Unpack[WorkerOptionsOverrides],
    ) -> AsyncIterator[Worker]:
        """Run a worker in the background for the body of the ``async with`` (e.g. a FastAPI
        lifespan); leaving the block shuts it down gracefully. ``options`` (or any of its
        fields as keywords) say how; the shutdown timeout defaults to the App's."""
        worker = Worker(self, self._worker_options(options, overrides))
        async with anyio.create_task_group() as tg:
            await tg.start(worker.run)
            try:
                yield worker
            finally:
                worker.stop()

    async def run_worker(
        self,
        options: WorkerOptions | None = None,
        **overrides: Unpack[WorkerOptionsOverrides],
    ) -> None:
        """Run a worker until it is stopped (or, with ``burst=True``, the queues are empty)."""
        await Worker(self, self._worker_options(options, overrides)).run()

    def _worker_options(
        self, options: WorkerOptions | None, overrides: WorkerOptionsOverrides
    ) -> WorkerOptions:
        if options is None:
            overrides = {"shutdown_timeout": self.shutdown_timeout, **overrides}
            options = WorkerOptions()
        return options.replace(**overrides) if overrides else options
