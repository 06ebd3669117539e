"""The worker and producer processes of a soak (``soak/children.py`` is what runs in them):
worker slots that keep a worker process running through kills, and the producers."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from pathlib import Path

import anyio
from anyio.abc import Process, TaskStatus

from .config import Config

__all__ = ["Workers", "run_producers"]

HERE = Path(__file__).resolve().parents[1]
"""benchmarks/, where ``python -m soak.children`` is found."""


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
        self.exited_at: dict[int, float] = {}
        """When each of those exited, by pid (``time.monotonic()``)."""
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
                self.exited_at[process.pid] = time.monotonic()
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
