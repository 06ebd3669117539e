"""Worker recycling: a worker process that has taken ``max_jobs`` jobs, or whose resident
memory passed ``max_memory`` megabytes, stops fetching, lets its in-flight jobs finish (a
graceful stop, as on SIGTERM: what cannot finish in time goes back unstarted, its attempt
unspent) and exits with :data:`EXIT_RECYCLED`, so that whatever runs it starts a fresh
one: ``asyncq run --processes N``'s supervisor at once, or a process manager
(systemd's ``Restart=on-failure``, a container's restart policy).

It is the cure for handlers that leak (a C extension, a cache without a bound, a library
that keeps every response): the process is replaced before the OOM killer takes it with
its jobs, which would then wait for their leases to expire.
"""

from __future__ import annotations

import logging
import os
import resource
import sys
from typing import TYPE_CHECKING

import anyio

if TYPE_CHECKING:
    from .worker import Worker

__all__ = ["EXIT_RECYCLED", "MEMORY_CHECK_INTERVAL", "resident_memory", "watch_memory"]

log = logging.getLogger("asyncq.worker")

EXIT_RECYCLED = 75
"""The exit code of a recycled worker process (EX_TEMPFAIL: "try again"): not 0, so a
process manager that restarts only failed processes restarts it too."""

MEMORY_CHECK_INTERVAL = 0.25
"""Seconds between two looks at the worker's resident memory: one read of a small file,
about 10 µs, so four a second cost nothing, and a fast leak overshoots little."""

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def resident_memory() -> int:
    """This process's resident set size in bytes: now, from ``/proc/self/statm`` on Linux;
    elsewhere the peak so far (``getrusage``), which only ever errs towards recycling."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE
    except OSError:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024  # bytes there, KiB here


async def watch_memory(worker: Worker, limit_mb: float) -> None:
    """Recycle ``worker`` once its process's resident memory is above ``limit_mb``."""
    limit = limit_mb * 1024 * 1024
    while True:
        rss = resident_memory()
        if rss > limit:
            worker.recycle(
                f"its memory ({rss / 1048576:.0f} MB resident) is over --max-memory "
                f"({limit_mb:g} MB)"
            )
            return
        await anyio.sleep(MEMORY_CHECK_INTERVAL)
