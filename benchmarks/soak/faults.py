"""The fault injector: one fault at a time, in rounds of every kind that applies, each
drawn (kind order, victim, length) from one seeded ``random.Random`` (the kinds are listed
in ``chaos.py``'s docstring)."""

from __future__ import annotations

import json
import random
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import anyio

from .brokers import Broker
from .config import Config, say
from .processes import Workers
from .proxy import Proxy

__all__ = ["BROKER_FAULTS", "FAULTS", "NETWORK_FAULTS", "WORKER_FAULTS", "Fault", "Injector"]

WORKER_FAULTS = ("worker-kill", "worker-pause")
NETWORK_FAULTS = ("network-cut", "network-delay")
BROKER_FAULTS = ("broker-kill", "broker-stop")
FAULTS = WORKER_FAULTS + NETWORK_FAULTS + BROKER_FAULTS


@dataclass(frozen=True, slots=True)
class Fault:
    kind: str
    start: float
    end: float
    pids: frozenset[int] | None
    """The worker processes it hit; None: every one."""
    detail: str


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
            detail = f"SIGSTOP pid {victim.pid} for {seconds:.1f} s"
            if self.config.backend == "sqlite":
                # Stopped inside a write transaction, the process keeps the file's write
                # lock: every other process's writes (renewals and settles too) wait.
                return None, detail
            return frozenset([victim.pid]), detail
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
        where = self.broker.describe(node)
        return None, f"{where} {how}, down {down:.1f} s, back after {took:.1f} s"
