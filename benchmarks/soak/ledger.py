"""The soak's ledger: what the producers had confirmed and what the handlers ran, kept outside
the broker under test so that no fault of the broker can rewrite it.

Every process appends to a file of its own in the ledger directory, one line per event,
flushed as it is written: a line the kernel has taken (``write(2)`` returned) survives the
SIGKILL of its writer, which is the only crash the soak inflicts on the processes that write
(the machine itself does not crash, so no fsync is needed). Lines, space-separated, times
from ``time.monotonic()`` (one clock for every process of the host on Linux):

* ``enqueue-P.log``, producer ``P``: ``C LID JOB T`` the enqueue of ledger id ``LID``
  returned job ``JOB``; ``E LID ERROR T`` an attempt raised ``ERROR`` (it is tried again);
  ``U LID T`` the producer gave up on ``LID`` (never confirmed).
* ``run-W-PID.log``, worker slot ``W`` run by process ``PID``: ``S LID JOB PID ATTEMPT R T``
  a handler started (``R`` 1 if the delivery was flagged redelivered), written before the
  handler does anything else; ``F LID JOB PID T`` that handler returned (its ack follows).

The reader takes only whole lines: a writer killed in the middle of one leaves no half line
behind that could be miscounted.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

__all__ = ["Ledger", "LedgerWriter", "Run"]


class LedgerWriter:
    """One process's ledger file, each line flushed to the kernel as it is written."""

    def __init__(self, path: Path) -> None:
        self._file: TextIO = path.open("a", encoding="ascii")

    def write(self, *fields: object) -> None:
        self._file.write(" ".join(map(str, (*fields, f"{time.monotonic():.6f}"))) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


@dataclass(slots=True)
class Run:
    """One handler run: started at ``start``, returned at ``end`` (None: it never did)."""

    lid: str
    job_id: str
    pid: int
    attempt: int
    redelivered: bool
    start: float
    end: float | None = None


@dataclass
class Ledger:
    """Everything the ledger files say so far; :meth:`refresh` reads what was added since."""

    directory: Path
    confirmed: dict[str, str] = field(default_factory=dict)
    """Ledger id -> the job id its (first) confirmed enqueue returned."""
    confirmed_at: dict[str, float] = field(default_factory=dict)
    extra_job_ids: dict[str, set[str]] = field(default_factory=dict)
    """Ledger ids whose enqueues, retried, returned more than one job id."""
    enqueue_errors: Counter[str] = field(default_factory=Counter)
    given_up: set[str] = field(default_factory=set)
    runs: list[Run] = field(default_factory=list)
    finished: dict[str, float] = field(default_factory=dict)
    """Ledger id -> when its first run returned."""
    _open: dict[tuple[int, str], list[Run]] = field(default_factory=dict)
    _offsets: dict[Path, int] = field(default_factory=dict)

    def refresh(self) -> None:
        for path in sorted(self.directory.glob("*.log")):
            offset = self._offsets.get(path, 0)
            with path.open("rb") as file:
                file.seek(offset)
                data = file.read()
            end = data.rfind(b"\n") + 1  # whole lines only
            self._offsets[path] = offset + end
            for line in data[:end].decode("ascii").splitlines():
                self._take(line.split())

    def _take(self, fields: list[str]) -> None:
        kind = fields[0]
        if kind == "S":
            lid, job_id, pid, attempt, redelivered, start = fields[1:]
            run = Run(lid, job_id, int(pid), int(attempt), redelivered == "1", float(start))
            self.runs.append(run)
            # A worker may be given the same job again while its first run goes on (its
            # lease lapsed while it was cut off; on RabbitMQ, its connection was declared
            # dead during a pause and it consumes again): two runs open at once in one
            # process. F lines do not say which run returned, so the earliest open one is
            # taken to have (its handler started first).
            self._open.setdefault((run.pid, job_id), []).append(run)
        elif kind == "F":
            lid, job_id, pid, end = fields[1:]
            key = (int(pid), job_id)
            finished = self._open[key].pop(0)
            if not self._open[key]:
                del self._open[key]
            finished.end = float(end)
            self.finished.setdefault(lid, finished.end)
        elif kind == "C":
            lid, job_id, at = fields[1:]
            first = self.confirmed.setdefault(lid, job_id)
            self.confirmed_at.setdefault(lid, float(at))
            if first != job_id:
                self.extra_job_ids.setdefault(lid, {first}).add(job_id)
        elif kind == "E":
            self.enqueue_errors[fields[2]] += 1
        elif kind == "U":
            self.given_up.add(fields[1])
        else:
            raise ValueError(f"unknown ledger line {' '.join(fields)!r}")

    @property
    def started(self) -> set[str]:
        return {run.lid for run in self.runs}

    def unfinished(self) -> set[str]:
        """Confirmed ledger ids with no run that returned."""
        return set(self.confirmed) - set(self.finished)
