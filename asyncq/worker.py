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
import math
import os
import signal
import socket
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from functools import partial
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import TaskStatus

from .backend import Outcome, Settlement
from .broker_wait import enter_when_reachable
from .deadlines import check_timeouts
from .errors import BrokerError
from .execution import CANCELLED, SHUTDOWN, Running, error_info, execute
from .joblog import job_finished
from .metrics import WorkerMetrics, configured_provider
from .records import WorkerInfo

if TYPE_CHECKING:
    from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

    from .app import App

__all__ = ["Worker"]

log = logging.getLogger("asyncq.worker")

_SETTLE_BATCH = 512


class Worker:
    """Runs an App's tasks from the given queues. Build one with ``app.worker()`` or
    ``app.run_worker()``; the CLI's ``asyncq run`` does the same."""

    def __init__(
        self,
        app: App,
        *,
        queues: Sequence[str] | None = None,
        concurrency: int = 10,
        prefetch: int | None = None,
        burst: bool = False,
        shutdown_timeout: float = 30.0,
        handle_signals: bool = False,
        heartbeat_interval: float = 10.0,
        fetch_timeout: float = 5.0,
        meter_provider: Any = None,
        metrics_interval: float = 5.0,
        wait_for_broker: float = 0.0,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        if prefetch is None:
            prefetch = concurrency // 4
        if not 0 <= prefetch <= concurrency:
            raise ValueError("prefetch must be between 0 and concurrency")
        if shutdown_timeout < 0:
            raise ValueError("shutdown_timeout must be >= 0")
        if not heartbeat_interval > 0:
            raise ValueError("heartbeat_interval must be > 0 seconds")
        if not metrics_interval > 0:
            raise ValueError("metrics_interval must be > 0 seconds")
        if not wait_for_broker >= 0:
            raise ValueError("wait_for_broker must be >= 0 seconds")
        self.app = app
        self.queues = tuple(queues) if queues else app.queues
        if not self.queues or not all(isinstance(q, str) and q for q in self.queues):
            raise ValueError("queues must be non-empty queue names")
        self.concurrency = concurrency
        self.prefetch = prefetch
        self.burst = burst
        self.shutdown_timeout = shutdown_timeout
        self.handle_signals = handle_signals
        self.heartbeat_interval = heartbeat_interval
        self.fetch_timeout = fetch_timeout
        # Metrics go to this OpenTelemetry MeterProvider, or to the global one when an SDK
        # has set it; with neither, nothing is recorded.
        self.meter_provider = meter_provider
        self.metrics_interval = metrics_interval
        # At start, how long to keep trying a broker that cannot be reached (it may start
        # after the worker); 0: fail at once.
        self.wait_for_broker = wait_for_broker
        self._waiting_for_broker = False
        self._metrics: WorkerMetrics | None = None
        self.id = f"{socket.gethostname()}:{os.getpid()}:{os.urandom(4).hex()}"
        self.started_at = 0.0
        self.processed = 0
        self._running: dict[str, Running] = {}
        self._slots = anyio.Semaphore(concurrency + prefetch)
        self._fetch_scope = anyio.CancelScope()
        self._drain_scope = anyio.CancelScope()
        self._burst_wait = anyio.CancelScope()
        self._run_scope = anyio.CancelScope()
        self._unsettled = 0
        self._flushed = anyio.Event()
        self._serving = False
        self._idle = anyio.Event()
        self._fetched_nothing = True
        self._settled = anyio.Event()
        self._stopping = False
        self._settle_send: MemoryObjectSendStream[Settlement] | None = None
        self._time_limits: str | None = None

    @property
    def in_flight(self) -> int:
        return len(self._running)

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
            send, receive = anyio.create_memory_object_stream[Settlement](math.inf)
            self._settle_send = send
            self.started_at = time.time()
            services.start_soon(self._settle_loop, receive)
            services.start_soon(self._heartbeat_loop)
            services.start_soon(app.backend.store.watch_cancellations, self._on_cancel_request)
            services.start_soon(app.backend.maintain, self.queues)
            if app.backend.lease_renewal_interval:
                services.start_soon(self._renew_loop, app.backend.lease_renewal_interval)
            provider = self.meter_provider or configured_provider()
            if provider is not None:
                self._metrics = WorkerMetrics(provider, self._held_queues, self.queues)
                stats = partial(app.backend.queue_stats, self.queues)
                services.start_soon(self._metrics.poll_depths, stats, self.metrics_interval)
            self._serving = True
            log.info(
                "worker %s started: queues=%s concurrency=%d",
                self.id,
                ",".join(self.queues),
                self.concurrency,
            )
            if self._time_limits is not None:
                log.info("%s", self._time_limits)
            task_status.started(self)
            ready, ready_receive = anyio.create_memory_object_stream[Running](math.inf)
            try:
                async with anyio.create_task_group() as runners, ready:
                    for _ in range(self.concurrency):
                        runners.start_soon(self._runner, ready_receive.clone())
                    ready_receive.close()
                    with self._fetch_scope:
                        await self._fetch_loop(ready)
                    self._stopping = True
                    if self._running:
                        log.info("waiting for %d in-flight job(s) to finish", len(self._running))
                        with self._drain_scope:
                            self._drain_scope.deadline = (
                                anyio.current_time() + self.shutdown_timeout
                            )
                            await self._idle.wait()
                    for running in list(self._running.values()):
                        running.cancel(SHUTDOWN)
            finally:
                with anyio.CancelScope(shield=True):
                    send.close()
                    with anyio.move_on_after(self.shutdown_timeout + 5):
                        await self._settled.wait()
                    await self._deregister()
                    if self._metrics is not None:
                        self._metrics.close()
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
    async def _fetch_loop(self, ready: MemoryObjectSendStream[Running]) -> None:
        slots, backend, queues = self._slots, self.app.backend, self.queues
        fetch_timeout = min(self.fetch_timeout, 0.1) if self.burst else self.fetch_timeout
        # Burst: whether the last fetch came back empty. Only then is it worth asking the
        # broker whether the queues are drained; while jobs keep coming, the question costs
        # a round trip for nothing (and, on RabbitMQ, a queue declare of several ms).
        self._fetched_nothing = True
        while True:
            await slots.acquire()
            if self.burst and self._fetched_nothing and not self._running and await self._drained():
                slots.release()
                return
            free = 1
            while slots.value > 0:
                slots.acquire_nowait()
                free += 1
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
                await anyio.sleep(1.0)  # back off from a broker that is down
                continue
            except BaseException:
                for _ in range(free):
                    slots.release()
                raise
            self._fetched_nothing = not deliveries
            for _ in range(free - len(deliveries)):
                slots.release()
            if not deliveries:
                if self.burst and await self._drained():
                    return
                continue
            received = time.monotonic()  # one fetch, one moment: a clock read per batch
            for delivery in deliveries:
                running = Running(delivery, anyio.CancelScope(), received)
                self._running[delivery.id] = running
                # The next free runner takes it; slots bound what waits to concurrency + prefetch.
                ready.send_nowait(running)

    async def _drained(self) -> bool:
        if self._running:
            return False
        # Our last settlements may still be on their way (a retry not yet scheduled, a
        # job the broker still counts as running): let them land before looking.
        while self._unsettled:
            await self._flushed.wait()
        stats = await self.app.backend.queue_stats(self.queues)
        return all(s.pending == 0 and s.scheduled == 0 and s.running == 0 for s in stats)

    # -- running ---------------------------------------------------------------------------
    async def _runner(self, ready: MemoryObjectReceiveStream[Running]) -> None:
        """One of ``concurrency`` long-lived runners, each running one job at a time.

        Each job still gets a task of its own, for a fresh copy of the context (what a
        handler sets in a context variable stays with its job), but a plain asyncio task
        awaited right here: a fraction of the cost of a task-group task, and it cannot
        outlive its runner, whose cancellation it receives.
        """
        loop = asyncio.get_running_loop()
        async with ready:
            while True:
                try:  # a prefetched job is already waiting: no need to yield first
                    running = ready.receive_nowait()
                except anyio.WouldBlock:
                    try:
                        running = await ready.receive()
                    except anyio.EndOfStream:
                        return
                except anyio.EndOfStream:
                    return
                await loop.create_task(self._run_one(running))

    async def _run_one(self, running: Running) -> None:
        delivery = running.delivery
        started = time.time()
        try:
            if self._stopping:  # prefetched, not started: back to the queue as it was
                running.cause = SHUTDOWN
                settlement = Settlement(delivery, Outcome.RELEASE)
            else:
                settlement = await execute(self.app, running)
        except Exception as exc:  # a bug in asyncq itself: never lose the job over it
            log.exception("internal error running job %s", delivery.id)
            settlement = Settlement(delivery, Outcome.DEAD, error=error_info(exc))
        finally:
            self._running.pop(delivery.id, None)
            self._slots.release()
            if not self._running:
                if self._stopping:
                    self._idle.set()
                elif self.burst and self._fetched_nothing:
                    self._burst_wait.cancel()
        cause = running.cause
        if cause is not None and settlement.outcome is not Outcome.SUCCEEDED:
            # Why the scope was cancelled wins over what the handler made of it (say, an
            # exception of its own); a handler that finished anyway keeps its result.
            if cause == SHUTDOWN:
                settlement = Settlement(delivery, Outcome.RELEASE)
            else:
                settlement = Settlement(
                    delivery,
                    Outcome.CANCELLED,
                    task=settlement.task,
                    attempt=settlement.attempt,
                    result_ttl=settlement.result_ttl,
                )
        self._finished(running, settlement, started)
        self.processed += 1
        self._unsettled += 1
        assert self._settle_send is not None
        self._settle_send.send_nowait(settlement)

    def _finished(self, running: Running, settlement: Settlement, started: float) -> None:
        """Count and log one attempt's outcome."""
        message = running.message
        duration = time.time() - started
        task = settlement.task or (message.task if message is not None else "")
        queue = running.delivery.queue
        # Only a prefetched job handed back at shutdown never started.
        started_at_all = message is not None or settlement.outcome is not Outcome.RELEASE
        job_finished(settlement, task, started_at_all, duration, running.trace_id)
        metrics = self._metrics
        if metrics is not None:
            if message is not None:
                ready_at = max(message.enqueued_at, message.eta or 0.0)
                metrics.started(queue, task, started - ready_at)
            metrics.finished(queue, task, settlement.outcome, duration)

    def _held_queues(self) -> list[str]:
        return [r.delivery.queue for r in list(self._running.values())]

    def _on_cancel_request(self, job_id: str) -> None:
        running = self._running.get(job_id)
        if running is not None:
            running.cancel(CANCELLED)

    # -- service loops ---------------------------------------------------------------------
    async def _settle_loop(self, receive: MemoryObjectReceiveStream[Settlement]) -> None:
        """Settle finished jobs in batches: whatever finished while the last batch was in
        flight goes in the next round trip."""
        backend = self.app.backend
        try:
            async with receive:
                async for first in receive:
                    batch = [first]
                    while len(batch) < _SETTLE_BATCH:
                        try:
                            batch.append(receive.receive_nowait())
                        except (anyio.WouldBlock, anyio.EndOfStream):
                            break
                    await self._settle(backend.settle, batch)
                    self._unsettled -= len(batch)
                    if not self._unsettled:
                        self._flushed.set()
                        self._flushed = anyio.Event()
        finally:
            self._settled.set()

    async def _settle(self, settle: Any, batch: list[Settlement]) -> None:
        for attempt in range(1, 6):
            try:
                await settle(batch)
                return
            except BrokerError as exc:
                log.warning("settling %d job(s) failed (try %d of 5): %s", len(batch), attempt, exc)
                await anyio.sleep(min(0.2 * 2**attempt, 5.0))
        # Unsettled jobs are not lost: the broker delivers them again after their lease.
        log.error("gave up settling %d job(s); they will be delivered again", len(batch))

    async def _renew_loop(self, interval: float) -> None:
        backend = self.app.backend
        while True:
            await anyio.sleep(interval)  # a lease is time-based, so renewal is a timer
            if self._running:
                try:
                    await backend.renew([r.delivery for r in self._running.values()])
                except BrokerError as exc:
                    log.warning("lease renewal failed: %s", exc)

    async def _heartbeat_loop(self) -> None:
        """Beat every ``heartbeat_interval``, and also within a second of a change in the
        jobs held, so what `asyncq workers` lists agrees with the queues' own counts."""
        backend = self.app.backend
        host, pid = socket.gethostname(), os.getpid()
        sent: int | None = None
        due = 0.0
        while True:
            held = len(self._running)
            if held != sent or anyio.current_time() >= due:
                info = WorkerInfo(
                    id=self.id,
                    host=host,
                    pid=pid,
                    queues=self.queues,
                    concurrency=self.concurrency,
                    in_flight=held,
                    started_at=self.started_at,
                )
                try:
                    await backend.store.heartbeat(info, ttl=self.heartbeat_interval * 3)
                    sent = held
                except BrokerError as exc:
                    log.warning("heartbeat failed: %s", exc)
                due = anyio.current_time() + self.heartbeat_interval
            # A liveness signal is periodic; the one-second look at the count bounds both
            # how stale the listing gets and how often a busy worker writes (once a second).
            await anyio.sleep(min(1.0, self.heartbeat_interval))

    async def _deregister(self) -> None:
        try:
            await self.app.backend.store.deregister(self.id)
        except BrokerError as exc:
            log.warning("could not deregister worker %s: %s", self.id, exc)

    async def _signal_loop(self) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                name = signal.Signals(signum).name
                if not self._stopping:
                    log.warning(
                        "%s: finishing %d in-flight job(s) within %.0f s; again to exit now",
                        name,
                        len(self._running),
                        self.shutdown_timeout,
                    )
                    self.stop()
                else:
                    log.warning("%s again: returning in-flight jobs to the queue now", name)
                    self.stop(now=True)
