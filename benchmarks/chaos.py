"""A chaos soak: producers and workers in processes of their own, for a set time, while faults
are injected, with a ledger that proves no confirmed job was lost.

    python benchmarks/chaos.py --backend redis --duration 600
    python benchmarks/chaos.py --backend postgres --duration 60 --json
    python benchmarks/chaos.py --backend sqlite --duration 60 --seed 7
    python benchmarks/chaos.py --broker-url redis://127.0.0.1:6379/14 --duration 60

The broker is a private one the soak starts on free loopback ports and may kill
(``soak/brokers.py``): redis-server with AOF ``appendfsync always``, a PostgreSQL cluster of
its own (initdb + pg_ctl), or an SQLite file; ``--broker-url`` names one someone else started
instead (never restarted). Workers and producers reach a networked broker through a TCP
proxy of the soak's own (``soak/proxy.py``), which the injector cuts and delays.

Faults, one at a time, every ``--fault-gap`` seconds, in rounds that each take every kind
that applies once, in an order drawn from ``random.Random(--seed)`` (as are every victim and
length):

* ``worker-kill``: SIGKILL a worker process; its slot starts a replacement at once;
* ``worker-pause``: SIGSTOP a worker for the visibility timeout plus 1 to 3 s, then SIGCONT;
* ``network-cut``: the proxy drops every connection and refuses new ones for 2 to 5 s;
* ``network-delay``: the proxy delivers everything 50 to 500 ms late for 3 to 6 s;
* ``broker-kill``: the broker crashes (Redis: SIGKILL; PostgreSQL: ``pg_ctl stop -m
  immediate``), stays down 1 to 3 s, and starts again on its port and data;
* ``broker-stop``: the same with a clean shutdown (SIGTERM; ``pg_ctl stop -m fast``).

SQLite has no server and no network: only the worker faults apply to it.

The ledger (``soak/ledger.py``): each producer records every ledger id whose enqueue
returned (confirmed) and retries one that raised with the same id and, by default, the id as
its idempotency key; each handler records its start (before anything else) and its return.
After the faults stop, the producers finish, and the workers drain until every confirmed job
has returned once and the queue holds nothing (or ``--drain-timeout`` passes). Then:

* **lost**: confirmed ids with no run that returned (must be 0; ``never started`` is the part
  with no run at all). A confirmed id in the dead-letter queue counts as lost too.
* **duplicated runs**: runs of a job beyond its first. Each must be explained by a fault:
  a run is *in flight at a fault* if it ran on a worker the fault hit (the victim of a
  worker kill or pause; every worker for a network cut or delay and for a broker restart),
  had not returned ``--slack`` seconds before the fault began, and started no later than
  ``--slack`` seconds after it ended. The slack is the time a job spends inside a worker
  out of the handler's sight: a run that returned just before a kill may not have been
  acknowledged yet, and a worker resumed after a pause may start a delivery it had been
  handed (in its buffers or its socket's) before its lease ran out, and another worker took
  it. A run that never returned ended when its worker was killed. A broker restart or a
  network fault counts every worker's runs, since it can cost acknowledgements anywhere (a
  settle that failed, a lease that lapsed while renewals could not get through, or, on
  PostgreSQL, a claim lost in the crash: claims commit without waiting for the disk).
  The rule, per job: runs - 1 <= its runs in flight at a fault. Summed over the jobs, the
  duplicated runs are within the bound, the runs in flight at a fault. A job that breaks
  the rule is listed as an unexplained duplicate (and fails the soak).
* **enqueue duplicates**: a ledger id run under more than one job id (a retried enqueue
  stored twice); with idempotency keys there must be none.
* **recovery**: the longest gap between two completions while the producers ran; per
  fault, the time from its end to the next completion, and the time from its start until
  every job in flight on the workers it hit had returned somewhere (for a worker kill,
  about the visibility timeout).

Exit status 0 when nothing was lost, every duplicate is explained, (with keys) no enqueue
was stored twice, and the drain finished in time; 1 otherwise (the ids are listed); 2 when
the broker could not be set up. The working directory (ledger, logs, broker data, and
``faults.jsonl``) is kept when the soak fails or with ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import Process, TaskStatus

import asyncq

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from soak.brokers import Broker, BrokerSetupError, ExternalBroker, broker_for  # noqa: E402
from soak.ledger import Ledger, Run  # noqa: E402
from soak.proxy import Proxy  # noqa: E402

WORKER_FAULTS = ("worker-kill", "worker-pause")
NETWORK_FAULTS = ("network-cut", "network-delay")
BROKER_FAULTS = ("broker-kill", "broker-stop")
FAULTS = WORKER_FAULTS + NETWORK_FAULTS + BROKER_FAULTS
LEASED = ("redis", "rediss", "postgres", "postgresql", "sqlite")
"""The URL schemes whose deliveries are leases, for ``visibility_timeout`` (RabbitMQ's
return to the queue when the consumer's connection closes instead)."""


@dataclass(frozen=True, slots=True)
class Fault:
    kind: str
    start: float
    end: float
    pids: frozenset[int] | None
    """The worker processes it hit; None: every one."""
    detail: str


# -- workers and producers -------------------------------------------------------------------
def _child(role: str, url: str, ledger: Path, *options: str) -> list[str]:
    return [sys.executable, "-m", "soak.children", role, url, str(ledger), *options]


def _child_env() -> dict[str, str]:
    path = os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path}


class Workers:
    """``count`` worker slots, each keeping one worker process running: a process the soak
    killed is replaced at once; one that exited on its own is noted and replaced."""

    def __init__(self, count: int, url: str, work: Path, options: list[str]) -> None:
        self.count = count
        self.url = url
        self.work = work
        self.options = options
        self.running: dict[int, Process] = {}
        self.paused: set[int] = set()
        self.killed: set[int] = set()
        self.exits: list[str] = []
        """Processes that exited when nobody asked them to."""
        self.started = 0
        self.stopping = False

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        async with anyio.create_task_group() as tg:
            for slot in range(self.count):
                await tg.start(self._slot, slot)
            task_status.started()

    async def _slot(self, slot: int, *, task_status: TaskStatus[None]) -> None:
        announced = False
        while not self.stopping:
            self.started += 1
            name = f"w{slot}-{self.started}"
            with (self.work / f"{name}.out").open("ab") as log:
                process = await anyio.open_process(
                    _child("worker", self.url, self.work / "ledger" / f"run-{name}.log",
                           *self.options),
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    env=_child_env(),
                )  # fmt: skip
            self.running[slot] = process
            if not announced:
                announced = True
                task_status.started()
            try:
                code = await process.wait()
            finally:
                with anyio.CancelScope(shield=True):
                    if process.returncode is None:  # the soak itself is being cancelled
                        process.kill()
                        await process.wait()
                    await process.aclose()
                    del self.running[slot]
            if process.pid not in self.killed and not self.stopping:
                self.exits.append(f"{name} (pid {process.pid}) exited with {code}")
                # Not at once: a worker that cannot start would be restarted in a tight loop.
                await anyio.sleep(1.0)

    def pids(self) -> frozenset[int]:
        return frozenset(p.pid for p in self.running.values())

    def victim(self, rng: random.Random) -> Process:
        candidates = sorted(
            (p for p in self.running.values() if p.pid not in self.paused), key=lambda p: p.pid
        )
        return rng.choice(candidates)

    async def stop(self, timeout: float) -> None:
        """SIGTERM (a graceful shutdown), then SIGKILL for any still running after
        ``timeout``."""
        self.stopping = True
        processes = list(self.running.values())
        for process in processes:
            process.terminate()
        with anyio.move_on_after(timeout):
            for process in processes:
                await process.wait()
        for process in processes:
            if process.returncode is None:
                self.exits.append(f"pid {process.pid} ignored SIGTERM for {timeout:.0f} s")
                process.kill()


async def run_producers(config: Config, url: str, work: Path) -> list[int]:
    """Run the producer processes; their exit codes once every one has exited."""
    codes: list[int] = []

    async def produce(index: int) -> None:
        options = [
            *("--index", str(index), "--rate", str(config.rate)),
            *("--seconds", str(config.duration), "--give-up", str(config.give_up)),
            "--keys" if config.keys else "--no-keys",
        ]
        with (work / f"p{index}.out").open("ab") as log:
            process = await anyio.open_process(
                _child("producer", url, work / "ledger" / f"enqueue-{index}.log", *options),
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=_child_env(),
            )  # fmt: skip
        async with process:
            codes.append(await process.wait())

    async with anyio.create_task_group() as tg:
        for index in range(config.producers):
            tg.start_soon(produce, index)
    return codes


# -- faults ----------------------------------------------------------------------------------
class Injector:
    """Injects one fault at a time, every ``fault_gap`` seconds, until told to stop."""

    def __init__(
        self,
        config: Config,
        rng: random.Random,
        broker: Broker,
        proxies: list[Proxy],
        workers: Workers,
        origin: float,
        log: Path,
    ) -> None:
        self.log = log
        """Where each fault is written as it ends (JSON lines), for a post-mortem."""
        self.config = config
        self.rng = rng
        self.broker = broker
        self.proxies = proxies
        self.workers = workers
        self.origin = origin
        self.faults: list[Fault] = []
        self.kinds = [
            kind
            for kind in config.faults
            if kind in WORKER_FAULTS
            or (kind in NETWORK_FAULTS and proxies)
            or (kind in BROKER_FAULTS and broker.nodes)
        ]

    async def run(self, end: float) -> None:
        """Inject faults until ``end``; a fault under way when it comes is finished first,
        so the soak never ends with a worker stopped or the network cut."""
        order: list[str] = []
        low, high = self.config.fault_gap
        while self.kinds:
            gap = self.rng.uniform(low, high)
            if time.monotonic() + gap >= end:
                return
            await anyio.sleep(gap)
            if not order:
                order = self.rng.sample(self.kinds, len(self.kinds))
            kind = order.pop()
            start = time.monotonic()
            pids, detail = await self._inject(kind)
            fault = Fault(kind, start, time.monotonic(), pids, detail)
            self.faults.append(fault)
            with self.log.open("a") as log:
                entry = {**asdict(fault), "pids": sorted(pids) if pids is not None else None}
                log.write(json.dumps({**entry, "at": start - self.origin}) + "\n")
            at = f"[{fault.end - self.origin:6.1f} s] {kind} at {start - self.origin:.1f} s"
            say(f"{at}: {detail}")

    async def _inject(self, kind: str) -> tuple[frozenset[int] | None, str]:
        rng, workers = self.rng, self.workers
        if kind == "worker-kill":
            victim = workers.victim(rng)
            workers.killed.add(victim.pid)
            victim.kill()
            await victim.wait()
            return frozenset([victim.pid]), f"SIGKILL pid {victim.pid}"
        if kind == "worker-pause":
            victim = workers.victim(rng)
            seconds = self.config.visibility_timeout + rng.uniform(1.0, 3.0)
            workers.paused.add(victim.pid)
            victim.send_signal(signal.SIGSTOP)
            try:
                await anyio.sleep(seconds)
            finally:
                victim.send_signal(signal.SIGCONT)
                workers.paused.discard(victim.pid)
            return frozenset([victim.pid]), f"SIGSTOP pid {victim.pid} for {seconds:.1f} s"
        if kind == "network-cut":
            seconds = rng.uniform(2.0, 5.0)
            async with anyio.create_task_group() as tg:
                for proxy in self.proxies:
                    tg.start_soon(proxy.cut, seconds)
            return None, f"every connection dropped, new ones refused for {seconds:.1f} s"
        if kind == "network-delay":
            latency, seconds = rng.uniform(0.05, 0.5), rng.uniform(3.0, 6.0)
            async with anyio.create_task_group() as tg:
                for proxy in self.proxies:
                    tg.start_soon(proxy.delay, latency, seconds)
            return None, f"{latency * 1000:.0f} ms late either way for {seconds:.1f} s"
        node = rng.randrange(self.broker.nodes)
        down = rng.uniform(1.0, 3.0)
        hard = kind == "broker-kill"
        stopped = time.monotonic()
        try:
            await self.broker.stop_node(node, hard=hard)
            await anyio.sleep(down)
        finally:
            with anyio.CancelScope(shield=True):
                await self.broker.start_node(node)
        how = "crashed" if hard else "shut down"
        took = time.monotonic() - stopped
        return None, f"node {node} {how}, down {down:.1f} s, back after {took:.1f} s"


# -- the soak --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Config:
    backend: str
    broker_url: str | None
    duration: float
    seed: int
    producers: int
    workers: int
    concurrency: int
    rate: float
    handler_ms: str
    visibility_timeout: float
    fault_gap: tuple[float, float]
    faults: tuple[str, ...]
    slack: float
    drain_timeout: float
    give_up: float
    keys: bool
    progress_every: float


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


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
        await tg.start(broker.run)
        proxies = [Proxy(upstream) for upstream in broker.upstreams]
        for proxy in proxies:
            await tg.start(proxy.serve)
        endpoints = [("127.0.0.1", proxy.port) for proxy in proxies]
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


# -- the report ------------------------------------------------------------------------------
def in_flight(run: Run, fault: Fault, slack: float, killed_at: dict[int, float]) -> bool:
    """Whether ``run`` was in flight at ``fault`` (the rule in this module's docstring). A
    run that never returned ended when its worker was killed (``killed_at``, by pid)."""
    if fault.pids is not None and run.pid not in fault.pids:
        return False
    end = run.end if run.end is not None else killed_at.get(run.pid)
    return run.start <= fault.end + slack and (end is None or end >= fault.start - slack)


def _next_fault(run: Run, faults: list[Fault]) -> str | None:
    """For a post-mortem: the first fault that hit ``run``'s worker after the run returned,
    and how long after (a duplicate of a run that had returned points at an acknowledgement
    that was held back that long)."""
    if run.end is None:
        return None
    for fault in faults:
        if fault.start >= run.end and (fault.pids is None or run.pid in fault.pids):
            return f"{fault.kind} {fault.start - run.end:.2f} s after it returned"
    return None


def _runs_by(runs: list[Run], attribute: str) -> dict[str, list[Run]]:
    grouped: defaultdict[str, list[Run]] = defaultdict(list)
    for run in runs:
        grouped[getattr(run, attribute)].append(run)
    return grouped


def _gaps(times: list[float]) -> Iterator[tuple[float, float]]:
    for before, after in zip(times, times[1:], strict=False):
        yield after - before, before


def build_report(
    config: Config,
    ledger: Ledger,
    injector: Injector,
    origin: float,
    *,
    kind: str,
    faults_over: float,
    drained: bool,
    drain_seconds: float,
    dead: list[str],
    left: int,
    producer_codes: list[int],
    worker_exits: list[str],
    workers_started: int,
    tracebacks: int,
    proxied: int,
) -> dict[str, Any]:
    faults = injector.faults
    confirmed = set(ledger.confirmed)
    lost = sorted(confirmed - set(ledger.finished))
    never_started = sorted(confirmed - ledger.started)
    lid_of = {job_id: lid for lid, job_id in ledger.confirmed.items()}
    dead_confirmed = sorted(lid_of[j] for j in dead if j in lid_of)

    by_job = _runs_by(ledger.runs, "job_id")
    killed_at = {pid: f.start for f in faults if f.kind == "worker-kill" for pid in f.pids or ()}
    faulted: dict[int, list[str]] = {}  # id(run) -> the kinds of the faults it was in flight at
    for run in ledger.runs:
        kinds = [f.kind for f in faults if in_flight(run, f, config.slack, killed_at)]
        if kinds:
            faulted[id(run)] = kinds
    duplicated = sum(len(runs) - 1 for runs in by_job.values())
    unexplained = {
        job_id: [{**asdict(r), "next_fault": _next_fault(r, faults)} for r in runs]
        for job_id, runs in by_job.items()
        if len(runs) - 1 > sum(id(r) in faulted for r in runs)
    }
    bound_by_kind = Counter(k for kinds in faulted.values() for k in set(kinds))
    # Each duplicated job under the faults its runs were in flight at ("a+b": several).
    duplicated_by_kind: Counter[str] = Counter()
    for runs in by_job.values():
        if len(runs) > 1:
            kinds = sorted({k for r in runs for k in faulted.get(id(r), [])})
            duplicated_by_kind["+".join(kinds) or "unexplained"] += len(runs) - 1
    job_ids_of = {
        lid: {r.job_id for r in runs} for lid, runs in _runs_by(ledger.runs, "lid").items()
    }
    enqueue_duplicates = {lid: sorted(ids) for lid, ids in job_ids_of.items() if len(ids) > 1}
    not_flagged = sum(
        1 for runs in by_job.values() for r in sorted(runs, key=lambda r: r.start)[1:]
        if not r.redelivered
    )  # fmt: skip

    completions = sorted(r.end for r in ledger.runs if r.end is not None)
    # While the producers ran: the drain's tail (a last kill's jobs waiting out their lease
    # with nothing else left to run) is in the per-fault times instead.
    during = [t for t in completions if origin <= t <= faults_over]
    longest_gap, gap_at = max(_gaps(during), default=(0.0, origin))
    ends_of = {lid: sorted(r.end for r in runs if r.end is not None)
               for lid, runs in _runs_by(ledger.runs, "lid").items()}  # fmt: skip
    per_fault: list[dict[str, Any]] = []
    for fault in faults:
        later = [t for t in completions if t >= fault.end]
        next_completion = later[0] - fault.end if later else None
        hit = [
            r for r in ledger.runs if in_flight(r, fault, 0.0, killed_at) and r.start <= fault.start
        ]
        done = [next((t for t in ends_of[r.lid] if t >= r.start), None) for r in hit]
        recovered = (
            max((t - fault.start for t in done if t is not None), default=0.0)
            if None not in done
            else None
        )
        per_fault.append(
            {
                "kind": fault.kind,
                "at": round(fault.start - origin, 2),
                "lasted": round(fault.end - fault.start, 2),
                "detail": fault.detail,
                "in_flight": len(hit),
                "next_completion_after_end": _round(next_completion),
                "all_in_flight_returned_after": _round(recovered),
            }
        )
    by_kind: dict[str, dict[str, Any]] = {}
    for entry in per_fault:
        row = by_kind.setdefault(
            entry["kind"], {"count": 0, "max_next_completion": 0.0, "max_recovered": 0.0}
        )
        row["count"] += 1
        for key, source in (("max_next_completion", "next_completion_after_end"),
                            ("max_recovered", "all_in_flight_returned_after")):  # fmt: skip
            if entry[source] is None or row[key] is None:
                row[key] = None
            else:
                row[key] = max(row[key], entry[source])

    report: dict[str, Any] = {
        "backend": kind,
        "seed": config.seed,
        "duration": config.duration,
        "producers": config.producers,
        "workers": config.workers,
        "concurrency": config.concurrency,
        "rate_per_producer": config.rate,
        "visibility_timeout": config.visibility_timeout,
        "idempotency_keys": config.keys,
        "faults": len(faults),
        "faults_by_kind": dict(Counter(f.kind for f in faults)),
        "fault_kinds_applicable": injector.kinds,
        "confirmed": len(confirmed),
        "given_up": len(ledger.given_up),
        "enqueue_errors": dict(ledger.enqueue_errors),
        "completed": len(confirmed & set(ledger.finished)),
        "runs": len(ledger.runs),
        "ran_unconfirmed": len(ledger.started - confirmed),
        "lost": len(lost),
        "lost_ids": lost[:100],
        "never_started": len(never_started),
        "dead_lettered": len(dead_confirmed),
        "dead_lettered_ids": dead_confirmed[:100],
        "left_in_queue": left,
        "drained": drained,
        "drain_seconds": round(drain_seconds, 1),
        "duplicated_runs": duplicated,
        "duplicated_by_fault": dict(duplicated_by_kind),
        "bound": len(faulted),
        "bound_by_fault": dict(bound_by_kind),
        "unexplained_duplicates": len(unexplained),
        "unexplained": dict(list(unexplained.items())[:20]),
        "enqueue_duplicates": len(enqueue_duplicates),
        "enqueue_duplicate_ids": dict(list(enqueue_duplicates.items())[:20]),
        "later_runs_not_flagged_redelivered": not_flagged,
        "longest_completion_gap": round(longest_gap, 2),
        "longest_completion_gap_at": round(gap_at - origin, 2),
        "recovery_by_fault": by_kind,
        "per_fault": per_fault,
        "workers_started": workers_started,
        "worker_exits_unasked": worker_exits,
        "producer_exit_codes": producer_codes,
        "tracebacks_in_logs": tracebacks,
        "proxied_connections": proxied,
    }
    report["ok"] = bool(
        not lost
        and not dead_confirmed
        and not unexplained
        and not (config.keys and enqueue_duplicates)
        and drained
    )
    return report


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def print_report(report: dict[str, Any]) -> None:
    rows = [
        ("backend", report["backend"]),
        ("seed", report["seed"]),
        ("duration", f"{report['duration']:g} s, {report['producers']} producers at "
                     f"{report['rate_per_producer']:g}/s, {report['workers']} workers of "
                     f"concurrency {report['concurrency']}"),
        ("visibility timeout", f"{report['visibility_timeout']:g} s"),
        ("faults", f"{report['faults']} "
                   + json.dumps(report["faults_by_kind"], sort_keys=True)),
        ("jobs confirmed", report["confirmed"]),
        ("enqueue attempts that raised", json.dumps(report["enqueue_errors"], sort_keys=True)),
        ("given up (never confirmed)", report["given_up"]),
        ("jobs completed", report["completed"]),
        ("LOST", f"{report['lost']} (never started: {report['never_started']}, "
                 f"dead-lettered: {report['dead_lettered']})"),
        ("runs", report["runs"]),
        ("duplicated runs", f"{report['duplicated_runs']} "
                            + json.dumps(report["duplicated_by_fault"], sort_keys=True)),
        ("bound (runs in flight at a fault)", f"{report['bound']} "
                                              + json.dumps(report["bound_by_fault"],
                                                           sort_keys=True)),
        ("unexplained duplicates", report["unexplained_duplicates"]),
        ("enqueue duplicates", report["enqueue_duplicates"]),
        ("drained", f"{report['drained']} in {report['drain_seconds']} s, "
                    f"left in queue {report['left_in_queue']}"),
        ("longest completion gap", f"{report['longest_completion_gap']} s at "
                                   f"{report['longest_completion_gap_at']} s"),
        ("workers started", report["workers_started"]),
        ("workers exited unasked", len(report["worker_exits_unasked"])),
        ("tracebacks in logs", report["tracebacks_in_logs"]),
    ]  # fmt: skip
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:>{width}}  {value}")
    print()
    print(f"{'fault':<14} {'count':>5} {'next completion after end (max)':>32} "
          f"{'in-flight jobs all returned after (max)':>40}")  # fmt: skip
    for kind, row in sorted(report["recovery_by_fault"].items()):
        nxt, rec = row["max_next_completion"], row["max_recovered"]
        print(f"{kind:<14} {row['count']:>5} {_seconds(nxt):>32} {_seconds(rec):>40}")
    print()
    for entry in report["per_fault"]:
        print(f"  {entry['at']:7.1f} s  {entry['kind']:<14} {entry['detail']}; "
              f"{entry['in_flight']} in flight, all returned after "
              f"{_seconds(entry['all_in_flight_returned_after'])}")  # fmt: skip
    for name in ("lost_ids", "dead_lettered_ids"):
        if report[name]:
            print(f"{name}: {' '.join(report[name])}")
    if report["unexplained"]:
        print("unexplained duplicates:", json.dumps(report["unexplained"], indent=1))
    if report["enqueue_duplicate_ids"]:
        print("enqueue duplicates:", json.dumps(report["enqueue_duplicate_ids"]))
    for line in report["worker_exits_unasked"]:
        print(f"worker exited unasked: {line}")
    print("OK" if report["ok"] else "FAILED")


def _seconds(value: float | None) -> str:
    return "never" if value is None else f"{value:.2f} s"


def _pair(text: str) -> tuple[float, float]:
    low, high = (float(x) for x in text.split(","))
    return low, high


def parse_args(argv: list[str] | None = None) -> tuple[Config, argparse.Namespace]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=("redis", "sqlite", "postgres"), default="redis")
    parser.add_argument("--broker-url", help="a broker someone else started (not restarted)")
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of faults")
    parser.add_argument("--seed", type=int, default=18)
    parser.add_argument("--producers", type=int, default=2)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--rate", type=float, default=100.0, help="jobs/s per producer")
    parser.add_argument("--handler-ms", default="20,200", help="a run's time: uniform LOW,HIGH")
    parser.add_argument("--visibility-timeout", type=float, default=5.0)
    parser.add_argument("--fault-gap", type=_pair, default=(2.0, 6.0), help="LOW,HIGH seconds")
    parser.add_argument("--faults", default=",".join(FAULTS), help="the kinds to inject")
    parser.add_argument(
        "--slack",
        type=float,
        default=0.5,
        help="seconds a job spends in a worker out of its handler's sight",
    )
    parser.add_argument("--drain-timeout", type=float, default=120.0)
    parser.add_argument(
        "--give-up",
        type=float,
        default=60.0,
        help="seconds after the end a producer still retries an enqueue",
    )
    parser.add_argument(
        "--keys",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the ledger id as each enqueue's idempotency key",
    )
    parser.add_argument("--progress-every", type=float, default=10.0)
    parser.add_argument("--json", action="store_true", help="the report as one JSON line")
    parser.add_argument("--keep", action="store_true", help="keep the working directory")
    args = parser.parse_args(argv)  # fmt: skip
    faults = tuple(args.faults.split(",")) if args.faults else ()
    unknown = set(faults) - set(FAULTS)
    if unknown:
        parser.error(f"unknown faults {sorted(unknown)}; known: {', '.join(FAULTS)}")
    config = Config(
        backend=args.backend,
        broker_url=args.broker_url,
        duration=args.duration,
        seed=args.seed,
        producers=args.producers,
        workers=args.workers,
        concurrency=args.concurrency,
        rate=args.rate,
        handler_ms=args.handler_ms,
        visibility_timeout=args.visibility_timeout,
        fault_gap=args.fault_gap,
        faults=faults,
        slack=args.slack,
        drain_timeout=args.drain_timeout,
        give_up=args.give_up,
        keys=args.keys,
        progress_every=args.progress_every,
    )
    return config, args


def run_soak(config: Config, work: Path) -> dict[str, Any] | None:
    """The soak's report; None (the reason printed) if its broker could not be set up."""
    try:
        return anyio.run(soak, config, work)
    except* BrokerSetupError as group:
        for exc in group.exceptions:
            say(f"chaos: {exc}")
    return None


def main(argv: list[str] | None = None) -> int:
    config, args = parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="asyncq-chaos-"))
    work.chmod(0o755)  # the private PostgreSQL runs as its own user and keeps its data in it
    report = run_soak(config, work)
    if report is None:
        shutil.rmtree(work, ignore_errors=True)
        return 2
    report["directory"] = str(work)
    if report["ok"] and not args.keep:
        shutil.rmtree(work, ignore_errors=True)
        report["directory"] = None
    if args.json:
        print(json.dumps(report))
    else:
        print_report(report)
        if report["directory"]:
            print(f"kept: {report['directory']}")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
