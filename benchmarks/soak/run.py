"""The soak's run: the broker and its proxies up, the workers, the producers and the fault
injector at work, then the drain, and the report built from the ledger."""

from __future__ import annotations

import os
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

import anyio

import asyncq

from .brokers import Broker, BrokerSetupError, ExternalBroker, broker_for
from .config import Config, say
from .faults import Injector
from .ledger import Ledger
from .processes import Workers, run_producers
from .proxy import Proxy
from .report import build_report

__all__ = ["run_soak", "soak"]

LEASED = ("redis", "rediss", "redis-cluster", "postgres", "postgresql", "sqlite")
"""The backends (URL schemes, private brokers) whose deliveries are leases, for
``visibility_timeout`` (RabbitMQ's return to the queue when the consumer's connection
closes instead)."""


def with_options(url: str, kind: str, config: Config, unique: str) -> str:
    """``url`` with the soak's asyncq options: a short visibility timeout, so that kills and
    pauses recover in seconds, and names of its own on a shared server."""
    options = []
    if kind in LEASED:
        options.append(f"visibility_timeout={config.visibility_timeout:g}")
    if kind.startswith("redis"):
        options.append(f"prefix={unique}")
    elif kind.startswith("postgres"):
        options += [f"schema={unique}", "pool_size=4"]
    return url + ("&" if "?" in url else "?") + "&".join(options)


async def soak(config: Config, work: Path) -> dict[str, Any]:
    rng = random.Random(config.seed)
    (work / "ledger").mkdir()
    (work / "broker").mkdir()
    broker: Broker
    if config.broker_url:
        broker = ExternalBroker(config.broker_url)
    else:
        broker = broker_for(config.backend, work / "broker")
    unique = f"chaos_{config.seed}_{os.getpid()}"
    ledger = Ledger(work / "ledger")
    async with anyio.create_task_group() as tg:
        # The proxies first: a cluster's nodes announce their proxy's port, and reach one
        # another (replication) through them from the start.
        proxies = [Proxy(upstream) for upstream in broker.upstreams]
        for proxy in proxies:
            await tg.start(proxy.serve)
        endpoints = [("127.0.0.1", proxy.port) for proxy in proxies]
        broker.endpoints = endpoints
        await tg.start(broker.run)
        url = with_options(broker.client_url(endpoints), broker.kind, config, unique)
        direct = with_options(broker.client_url(broker.upstreams), broker.kind, config, unique)
        say(f"chaos soak on {broker.kind}: clients use {url}; seed {config.seed}; in {work}")
        # The soak's own App (queue depth, dead letters) opens first: on PostgreSQL it
        # creates the schema before any worker or producer races to.
        async with asyncq.App(direct) as observer:
            workers = Workers(
                config.workers,
                url,
                work,
                ["--concurrency", str(config.concurrency), "--handler-ms", config.handler_ms],
            )
            await tg.start(workers.run)
            origin = time.monotonic()
            injector = Injector(
                config, rng, broker, proxies, workers, origin, work / "faults.jsonl"
            )
            progress = anyio.CancelScope()
            tg.start_soon(report_progress, progress, ledger, injector, origin, config)
            producer_codes: list[int] = []

            async def producing() -> None:
                producer_codes.extend(await run_producers(config, url, work))

            async with anyio.create_task_group() as phase:
                phase.start_soon(producing)
                # No fault before every worker runs jobs: a worker killed while it still
                # imports asyncq proves nothing.
                await warmed_up(ledger, config.workers, timeout=60.0)
                await injector.run(origin + config.duration)
            faults_over = time.monotonic()
            say(f"[{faults_over - origin:6.1f} s] faults over, producers done; draining")
            drained = await drain(observer, ledger, config.drain_timeout)
            drain_seconds = time.monotonic() - faults_over
            dead = await dead_letter_ids(observer)
            stats = (await observer.queue_stats(["default"]))["default"]
        await workers.stop(timeout=15.0)
        if isinstance(broker, ExternalBroker):
            await broker.remove(unique)
        progress.cancel()
        tg.cancel_scope.cancel()
    ledger.refresh()
    return build_report(
        config,
        ledger,
        injector,
        origin,
        kind=broker.kind,
        faults_over=faults_over,
        drained=drained,
        drain_seconds=drain_seconds,
        dead=dead,
        left=stats.pending + stats.scheduled + stats.running,
        producer_codes=producer_codes,
        worker_exits=workers.exits,
        exited_at=workers.exited_at,
        workers_started=workers.started,
        tracebacks=count_tracebacks(work),
        proxied=sum(p.connections for p in proxies),
    )


def count_tracebacks(work: Path) -> int:
    """Tracebacks in the workers' and producers' output: none expected."""
    return sum(p.read_text(errors="replace").count("Traceback") for p in work.glob("*.out"))


async def report_progress(
    scope: anyio.CancelScope, ledger: Ledger, injector: Injector, origin: float, config: Config
) -> None:
    with scope:
        while True:
            await anyio.sleep(config.progress_every)
            ledger.refresh()
            kinds = Counter(f.kind for f in injector.faults)
            listed = ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())) or "none"
            say(
                f"[{time.monotonic() - origin:6.1f} s] confirmed {len(ledger.confirmed):,}"
                f"  ran {len(ledger.started):,}  returned {len(ledger.finished):,}"
                f"  runs {len(ledger.runs):,}  faults {len(injector.faults)} ({listed})"
            )


async def warmed_up(ledger: Ledger, workers: int, *, timeout: float) -> None:
    """Return once ``workers`` processes have each started a job (or after ``timeout``)."""
    with anyio.move_on_after(timeout):
        while len({run.pid for run in ledger.runs}) < workers:
            await anyio.sleep(0.2)  # files written by other processes: only time to wait on
            ledger.refresh()


async def drain(observer: asyncq.App, ledger: Ledger, timeout: float) -> bool:
    """Wait until every confirmed job has returned once and the queue holds nothing (not
    even a job a worker holds unacknowledged); False if ``timeout`` passed first."""
    with anyio.move_on_after(timeout):
        while True:
            ledger.refresh()
            if not ledger.unfinished():
                stats = (await observer.queue_stats(["default"]))["default"]
                if stats.pending + stats.scheduled + stats.running == 0:
                    return True
            # The ledger is files written by other processes: nothing to wait on but time.
            await anyio.sleep(0.5)
    return False


async def dead_letter_ids(observer: asyncq.App) -> list[str]:
    """The ids in the dead-letter queue: none expected (the handler never fails)."""
    return [d.id for d in await observer.dead_letters("default", limit=100_000)]


def run_soak(config: Config, work: Path) -> dict[str, Any] | None:
    """The soak's report; None (the reason printed) if its broker could not be set up."""
    try:
        return anyio.run(soak, config, work)
    except* BrokerSetupError as group:
        for exc in group.exceptions:
            say(f"chaos: {exc}")
    return None
