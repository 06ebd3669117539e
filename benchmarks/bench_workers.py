"""What the side-by-side benchmarks (redis_compare.py, postgres_compare.py) share: worker
processes, each in a session of its own, stopped gracefully and then killed as a group;
their peak memory; and the report's numbers and ratios. Standard library and anyio only,
since each library's virtualenv imports it."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import anyio
from anyio.abc import Process

__all__ = [
    "WorkerProcess",
    "WorkloadError",
    "batches",
    "kill_all_workers",
    "number",
    "peak_rss_mib",
    "percentile",
    "rate",
    "ratios",
]


class WorkloadError(Exception):
    """A workload could not finish; reported in the table, the run goes on."""


_LIVE: set[int] = set()
"""Process group ids of the worker processes not yet stopped (each is its own session)."""


def _group_members(pgid: int) -> list[int]:
    """Pids of the live (not zombie) processes in a process group."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # The fields after the command name (in parentheses, may hold spaces).
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry))
    return members


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def kill_all_workers() -> None:
    """SIGKILL every worker process group still running: the last resort on the way out."""
    for pgid in list(_LIVE):
        _kill_group(pgid)
        _LIVE.discard(pgid)


def peak_rss_mib(pid: int) -> float | None:
    """The process's peak resident set size (VmHWM) in MiB; None if it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # reported in kB
    return None


class WorkerProcess:
    """One worker process, in a session of its own, stopped on leaving the ``async with``:
    SIGTERM (the libraries' graceful shutdown), then SIGKILL to the whole group if anything
    of it is alive after ``stop_timeout`` (``killed`` says so)."""

    def __init__(
        self,
        command: Sequence[str],
        env: Mapping[str, str],
        *,
        cwd: Path,
        log_path: Path,
        stop_timeout: float,
    ) -> None:
        self.command, self.env, self.cwd = list(command), dict(env), cwd
        self.log_path = log_path
        self.stop_timeout = stop_timeout
        self.proc: Process | None = None
        self.spawned_at = 0.0
        self.killed = False

    async def __aenter__(self) -> Self:
        env = {**os.environ, **self.env}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(self.cwd), env.get("PYTHONPATH")]))
        with self.log_path.open("wb") as log:
            self.spawned_at = time.time()
            self.proc = await anyio.open_process(
                self.command,
                cwd=self.cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        _LIVE.add(self.proc.pid)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with anyio.CancelScope(shield=True):
            await self.stop()

    async def stop(self) -> None:
        proc = self.proc
        if proc is None or proc.pid not in _LIVE:
            return
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        with anyio.move_on_after(self.stop_timeout):
            await proc.wait()
            # A library's own child processes (taskiq's worker) are no child of ours: no
            # event says when they exit, so look at /proc until the group is empty.
            while _group_members(proc.pid):  # noqa: ASYNC110
                await anyio.sleep(0.05)
        if proc.returncode is None or _group_members(proc.pid):
            self.killed = True
            _kill_group(proc.pid)
            await proc.wait()
        _LIVE.discard(proc.pid)

    def last_log_line(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return lines[-1] if lines else ""

    def check_alive(self) -> None:
        assert self.proc is not None
        code = self.proc.returncode
        if code is not None:
            raise WorkloadError(
                f"worker exited with code {code} ({self.last_log_line()}); see {self.log_path}"
            )

    async def wait_ready(
        self, look: Callable[[], Awaitable[tuple[float, int] | None]], timeout: float = 60.0
    ) -> tuple[float, int]:
        """Wait until ``look()`` finds the worker's startup mark: (epoch time, pid)."""
        with anyio.move_on_after(timeout):
            while True:
                found = await look()
                if found is not None:
                    return found
                self.check_alive()
                await anyio.sleep(0.01)
        raise WorkloadError(f"worker not ready after {timeout:.0f} s; see {self.log_path}")


# -- numbers -----------------------------------------------------------------------------------
def batches(total: int, size: int) -> list[int]:
    return [min(size, total - start) for start in range(0, total, size)]


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


def rate(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f}"


def number(value: float | None, digits: int) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def ratios(
    results: Sequence[Any],
    rows: Sequence[tuple[str, str, bool, str]],
    subject: str = "asyncq",
) -> list[str]:
    """Per row of ``rows`` (label, result attribute, higher is better, unit), ``subject``'s
    number against the best other library's, as a ratio (above 1 is better for
    ``subject``, whichever way the number runs)."""
    mine = next((r for r in results if r.library == subject and not r.skipped), None)
    if mine is None:
        return []
    lines = []
    for label, name, higher, unit in rows:
        value = getattr(mine, name)
        others = [
            (getattr(r, name), r.library)
            for r in results
            if r is not mine and not r.skipped and getattr(r, name) is not None
        ]
        if value is None or not others:
            continue
        best, who = max(others) if higher else min(others)
        if not best or not value:
            continue
        ratio = value / best if higher else best / value
        lines.append(
            f"- {label}: {subject} {value:,.2f} {unit}, best other {who} {best:,.2f} {unit}: "
            f"{ratio:.2f}x"
        )
    return lines
