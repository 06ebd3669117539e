"""The worker: fetch jobs for free slots, run each in its own cancel scope, settle in batches.

One anyio task group holds the service loops (settling, lease renewal, heartbeat,
cancellation requests, signals); a nested one holds ``concurrency`` runners. The fetch loop
waits on a semaphore of ``concurrency + prefetch`` slots and asks the backend for exactly as
many jobs as there are free slots, which is how backpressure reaches the broker. Prefetched
jobs (a quarter of ``concurrency`` by default) wait for a runner, so the next batch is on
its way from the broker while the current one runs; on shutdown they go back unstarted.

A running job can end four ways besides its own result, each with its own outcome:

* **timeout** (the task's ``timeout``): a failure like any exception: retried, then dead;
* **cancellation** (``job.cancel()``): settled CANCELLED, never retried;
* **shutdown** (SIGTERM, ``stop()``): after ``shutdown_timeout`` the job is cancelled and
  released back to its queue unacknowledged, keeping its attempt number;
* **lost worker** (SIGKILL, a crash): nothing is settled; the backend delivers the job
  again with ``redelivered=True`` once the lease expires.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from functools import partial
from typing import TYPE_CHECKING, Unpack

import anyio
from anyio.abc import TaskStatus

from .attempt import CANCELLED, SHUTDOWN, Attempt
from .broker_wait import enter_when_reachable
from .deadlines import check_timeouts
from .delivery import Delivery
from .errors import BrokerError
from .execution import admit, error_info, execute
from .handoff import Handoff
from .limiter import Limiter, wants_limiter
from .metrics import WorkerMetrics, configured_provider
from .middleware import ExecutionChain
from .settlement import Settlement
from .settling import Settler
from .worker_options import WorkerOptions, WorkerOptionsOverrides
from .worker_services import WorkerService, default_services

if TYPE_CHECKING:
    from .app import App

__all__ = ["Worker"]

log = logging.getLogger("asyncq.worker")


class Worker:
    """Runs an App's tasks from the given queues. Build one with ``app.worker()`` or
    ``app.run_worker()``; the CLI's ``asyncq run`` does the same."""

    def __init__(
        self,
        app: App,
        options: WorkerOptions | None = None,
        **overrides: Unpack[WorkerOptionsOverrides],
    ) -> None:
        """``options`` (default: all defaults), with any field given as a keyword instead."""
        options = options or WorkerOptions()
        if overrides:
            options = options.replace(**overrides)
        self.options = options
        self.app = app
        self.queues = options.queues or app.queues
        self.concurrency = options.concurrency
        self.prefetch = options.slots - options.concurrency
        self.burst = options.burst
        self.schedules = options.schedules
        self.shutdown_timeout = options.shutdown_timeout
        self.handle_signals = options.handle_signals
        self.heartbeat_interval = options.heartbeat_interval
        self.fetch_timeout = options.fetch_timeout
        self.metrics_interval = options.metrics_interval
        self.wait_for_broker = options.wait_for_broker
        self.max_jobs = options.max_jobs
        self.recycled: str | None = None
        """Why the worker recycled itself (``max_jobs``, ``max_memory``); None if it did not."""
        self._taken = 0
        """Jobs fetched so far, against ``max_jobs``."""
        self._run_held = False
        """On this stop, jobs fetched and not yet started run anyway (a ``max_jobs``
        recycle: they were within the budget) instead of going back to the queue."""
        self.services: list[WorkerService] = default_services(self)
        """The loops that run beside the jobs as long as the worker serves (heartbeat,
        lease renewal, cancellation requests, the broker's upkeep, metrics); a feature
        joins by adding one before ``run()``."""
        self._waiting_for_broker = False
        self.metrics: WorkerMetrics | None = None
        self.id = f"{socket.gethostname()}:{os.getpid()}:{os.urandom(4).hex()}"
        self.started_at = 0.0
        self.processed = 0
        self.running: dict[str, Attempt] = {}
        """The attempts this worker holds (running, or prefetched), by job id."""
        self._slots = anyio.Semaphore(options.slots)
        self._fetch_scope = anyio.CancelScope()
        self._drain_scope = anyio.CancelScope()
        self._burst_wait = anyio.CancelScope()
        self._run_scope = anyio.CancelScope()
        self._serving = False
        self._idle = anyio.Event()
        self._fetched_nothing = True
        self._stopping = False
        self._settler: Settler | None = None
        self._time_limits: str | None = None
        self._execute: ExecutionChain | None = None
        self._limiter: Limiter | None = None

    @property
    def in_flight(self) -> int:
        return len(self.running)

    def held_deliveries(self) -> list[Delivery]:
        """Every delivery whose lease this worker keeps: running or prefetched, and also
        finished but not settled yet (a settlement retried through an outage); the lease
        of any of them lapsing would have another worker run the job again."""
        held = [a.delivery for a in self.running.values()]
        if self._settler is not None:
            held += self._settler.held()
        return held

    def broker_back(self) -> None:
        """A round trip reached the broker after one failed: settlements waiting out a
        backoff go now, beside what finished meanwhile."""
        if self._settler is not None:
            self._settler.broker_back()

    def recycle(self, reason: str, *, run_held: bool = False) -> None:
        """Stop gracefully, as ``stop()`` does, because of ``reason``: the process is to be
        replaced by a fresh one (see :mod:`asyncq.recycling`). ``run_held``: the jobs it
        holds and has not started run too (else they go back, as on SIGTERM)."""
        if self._stopping:
            return
        self.recycled, self._run_held = reason, run_held
        log.warning(
            "worker %s recycles itself: %s; finishing %d in-flight job(s) within %g s",
            self.id,
            reason,
            len(self.running),
            self.shutdown_timeout,
        )
        self.stop()

    def stop(self, *, now: bool = False) -> None:
        """Stop fetching and let in-flight jobs finish within ``shutdown_timeout``; with
        ``now=True`` cancel them at once. Either way unfinished jobs go back to the queue.
        A worker still waiting for its broker (``wait_for_broker``) stops waiting."""
        self._stopping = True
        self._fetch_scope.cancel()
        if self._waiting_for_broker:  # nothing has started: no need to wait any longer
            self._run_scope.cancel()
        if now:
            self._drain_scope.cancel()
            if not self._serving:  # still starting: nothing is in flight, so just leave
                self._run_scope.cancel()

    async def run(self, *, task_status: TaskStatus[Worker] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run until stopped (or, in burst mode, until the queues are drained)."""
        # Before anything starts: a task the broker's ack deadline does not allow is a
        # configuration error, not a job run twice half an hour into the run.
        served = [t for t in self.app.tasks.values() if t.queue in self.queues]
        self._time_limits = check_timeouts(self.app.backend, served)
        async with anyio.create_task_group() as outer:
            # Signals are heard from the start, so one during the lifespan's start-up or
            # tear-down is a graceful stop too, not the default abrupt exit.
            if self.handle_signals:
                outer.start_soon(self._signal_loop)
            try:
                with self._run_scope:
                    await self._serve(task_status)
            finally:
                outer.cancel_scope.cancel()

    async def _serve(self, task_status: TaskStatus[Worker]) -> None:
        app = self.app
        async with self._open_app(), app.run_lifespan(), anyio.create_task_group() as services:
            # Once per run, before any job: a producer opening the same App never gets it.
            await app.backend.on_worker_start()
            settler = self._settler = Settler(app.backend)
            self.started_at = time.time()
            services.start_soon(settler.run)
            provider = self.options.meter_provider or configured_provider()
            if provider is not None:
                self.metrics = WorkerMetrics(provider, self._held_queues, self.queues)
            # Any task's jobs may come in through any queue: its limit goes with it.
            if wants_limiter(list(app.tasks.values())):
                limiter = self._limiter = Limiter(app.backend, self.metrics)
                services.start_soon(limiter.run, name="asyncq limits")
            self._execute = ExecutionChain(
                app.middleware,
                partial(execute, app),
                system=app.backend.system,
                metrics=self.metrics,
            )
            for service in self.services:
                if service.wanted():
                    services.start_soon(service.run, name=f"asyncq {service.name}")
            self._serving = True
            log.info(
                "worker %s started: queues=%s concurrency=%d broker=%s",
                self.id,
                ",".join(self.queues),
                self.concurrency,
                self.app.describe_broker(),
            )
            if self._time_limits is not None:
                log.info("%s", self._time_limits)
            task_status.started(self)
            ready: Handoff[Attempt] = Handoff()
            try:
                async with anyio.create_task_group() as runners:
                    for _ in range(self.concurrency):
                        runners.start_soon(self._runner, ready)
                    try:
                        with self._fetch_scope:
                            await self._fetch_loop(ready)
                        # Before the runners hear of the stop: what the broker delivered ahead
                        # of a fetch goes back to the queue now, for other workers.
                        with anyio.CancelScope(shield=True):
                            try:
                                await app.backend.stop_consuming()
                            except BrokerError as exc:
                                log.warning("could not stop consuming: %s", exc)
                        self._stopping = True
                        if self.running:
                            log.info("waiting for %d in-flight job(s) to finish", len(self.running))
                            with self._drain_scope:
                                self._drain_scope.deadline = (
                                    anyio.current_time() + self.shutdown_timeout
                                )
                                await self._idle.wait()
                        for attempt in list(self.running.values()):
                            attempt.cancel(SHUTDOWN)
                    finally:
                        ready.close()  # the runners take what is left, then stop
            finally:
                with anyio.CancelScope(shield=True):
                    settler.close()
                    with anyio.move_on_after(self.shutdown_timeout + 5):
                        await settler.done()
                    if self._limiter is not None:
                        await self._limiter.close()
                    await self._deregister()
                    if self.metrics is not None:
                        self.metrics.close()
                services.cancel_scope.cancel()
        log.info("worker %s stopped after %d job(s)", self.id, self.processed)

    @asynccontextmanager
    async def _open_app(self) -> AsyncIterator[None]:
        """``async with app``, waiting up to ``wait_for_broker`` for an unreachable broker
        (see :mod:`asyncq.broker_wait`)."""
        wait = self.wait_for_broker
        async with AsyncExitStack() as stack:
            # Nothing has started yet, so a stop need not wait for the broker.
            self._waiting_for_broker = bool(wait)
            if self._stopping and wait:
                self._run_scope.cancel()
            await enter_when_reachable(stack, self.app, wait)
            self._waiting_for_broker = False
            yield

    # -- fetching --------------------------------------------------------------------------
    async def _fetch_loop(self, ready: Handoff[Attempt]) -> None:
        slots, backend, queues = self._slots, self.app.backend, self.queues
        fetch_timeout = min(self.fetch_timeout, 0.1) if self.burst else self.fetch_timeout
        # Burst: whether the last fetch came back empty. Only then is it worth asking the
        # broker whether the queues are drained; while jobs keep coming, the question costs
        # a round trip for nothing (and, on RabbitMQ, a queue declare of several ms).
        self._fetched_nothing = True
        # The running event loop's own cancel scope class, looked up once: anyio.CancelScope()
        # finds it on every call (2.1 us against 0.4 us a job on Python 3.11).
        new_scope = type(anyio.CancelScope())
        failed = False  # the last fetch failed: the next to succeed says the broker is back
        while True:
            await slots.acquire()
            if self.burst and self._fetched_nothing and not self.running and await self._drained():
                slots.release()
                return
            free = 1
            while slots.value > 0:
                slots.acquire_nowait()
                free += 1
            if self.max_jobs is not None and free > self.max_jobs - self._taken:
                budget = self.max_jobs - self._taken  # >= 1: the loop ends when it is spent
                for _ in range(free - budget):
                    slots.release()
                free = budget
            try:
                # Burst: the last job to finish cancels a waiting fetch, so the worker sees
                # at once that the queues are drained instead of after the timeout.
                deliveries = []
                with anyio.CancelScope() as self._burst_wait:
                    deliveries = await backend.fetch(queues, free, timeout=fetch_timeout)
            except BrokerError as exc:
                for _ in range(free):
                    slots.release()
                log.warning("fetch failed, retrying in 1 s: %s", exc)
                failed = True
                await anyio.sleep(1.0)  # back off from a broker that is down
                continue
            except BaseException:
                for _ in range(free):
                    slots.release()
                raise
            if failed:
                failed = False
                self.broker_back()
            self._fetched_nothing = not deliveries
            self._taken += len(deliveries)
            for _ in range(free - len(deliveries)):
                slots.release()
            if not deliveries:
                if self.burst and await self._drained():
                    return
                continue
            received = time.monotonic()  # one fetch, one moment: a clock read per batch
            for delivery in deliveries:
                attempt = Attempt(delivery, new_scope(), received)
                self.running[delivery.id] = attempt
                # The next free runner takes it; slots bound what waits to concurrency + prefetch.
                ready.put(attempt)
            if self.max_jobs is not None and self._taken >= self.max_jobs:
                self.recycle(f"it has taken {self._taken} job(s), its max_jobs", run_held=True)
                return
            # The jobs start before the next fetch is sent: a runner wakes, then its job's
            # task, and the acquire above yields once; this lets both go first, so an idle
            # worker's job does not wait behind the next round trip's writing.
            await asyncio.sleep(0)

    async def _drained(self) -> bool:
        if self.running:
            return False
        # Our last settlements may still be on their way (a retry not yet scheduled, a
        # job the broker still counts as running): let them land before looking.
        assert self._settler is not None
        await self._settler.flushed()
        stats = await self.app.backend.queue_stats(self.queues)
        return all(s.pending == 0 and s.scheduled == 0 and s.running == 0 for s in stats)

    # -- running ---------------------------------------------------------------------------
    async def _runner(self, ready: Handoff[Attempt]) -> None:
        """One of ``concurrency`` long-lived runners, each running one job at a time.

        Each job still gets a task of its own, for a fresh copy of the context (what a
        handler sets in a context variable stays with its job), but a plain asyncio task
        awaited right here: a fraction of the cost of a task-group task, and it cannot
        outlive its runner, whose cancellation it receives.
        """
        loop = asyncio.get_running_loop()
        while (running := await ready.get()) is not None:
            await loop.create_task(self._run_one(running))

    async def _run_one(self, attempt: Attempt) -> None:
        delivery = attempt.delivery
        attempt.started_at = time.time()
        if self._stopping and not self._run_held:  # prefetched: execute() hands it back
            attempt.cause = SHUTDOWN
        assert self._execute is not None
        limiter = self._limiter
        try:
            admit(self.app, attempt)
            if limiter is not None:  # the App has limited tasks: is this job one of them?
                task = attempt.task
                if task is not None and task.limited and not attempt.cause:
                    refusal = await limiter.admit(attempt)
                    if refusal is not None:  # over a limit: back to wait, unstarted
                        self._defer(attempt, refusal.wait)
                        return
            settlement = await self._execute(attempt)
        except Exception as exc:  # a bug in asyncq or a middleware: never lose the job over it
            log.exception("internal error running job %s", delivery.id)
            message = attempt.message
            settlement = Settlement.dead(
                delivery,
                task=message.task if message is not None else "",
                attempt=message.attempt if message is not None else 1,
                error=error_info(exc),
            )
        finally:
            if limiter is not None:
                limiter.release(delivery.id)
            self.running.pop(delivery.id, None)
            self._slots.release()
            if not self.running:
                if self._stopping:
                    self._idle.set()
                elif self.burst and self._fetched_nothing:
                    self._burst_wait.cancel()
        self.processed += 1
        assert self._settler is not None
        self._settler.put(settlement)

    def _defer(self, attempt: Attempt, wait: float) -> None:
        message = attempt.message
        assert message is not None and self._settler is not None
        eta = time.time() + wait
        settlement = Settlement.defer(
            attempt.delivery, task=message.task, attempt=message.attempt, eta=eta
        )
        self._settler.put(settlement)

    def _held_queues(self) -> list[str]:
        return [r.delivery.queue for r in list(self.running.values())]

    def on_cancel_request(self, job_id: str) -> None:
        """A user cancelled ``job_id``: cancel its attempt, if this worker holds it."""
        attempt = self.running.get(job_id)
        if attempt is not None:
            attempt.cancel(CANCELLED)

    async def _deregister(self) -> None:
        if not self.app.backend.store.available:  # it never sent a heartbeat
            return
        try:
            await self.app.backend.store.deregister(self.id)
        except BrokerError as exc:
            log.warning("could not deregister worker %s: %s", self.id, exc)

    async def _signal_loop(self) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            heard = False  # not self._stopping: a worker that recycles itself stops unasked
            async for signum in signals:
                name = signal.Signals(signum).name
                if not heard:
                    heard = True
                    log.warning(
                        "%s: finishing %d in-flight job(s) within %.0f s; again to exit now",
                        name,
                        len(self.running),
                        self.shutdown_timeout,
                    )
                    self.stop()
                else:
                    log.warning("%s again: returning in-flight jobs to the queue now", name)
                    self.stop(now=True)
