"""The soak's options, parsed once from the command line (``chaos.py``), and where its
progress lines go."""

from __future__ import annotations

import sys
from dataclasses import dataclass

__all__ = ["Config", "say"]


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
