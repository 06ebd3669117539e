"""The JSON form of errors, progress and heartbeats, shared by every store that keeps them
as bytes (Redis, SQLite, PostgreSQL): one shape, so a record written by one reads the same
in any of them and in tools that read the store directly."""

from __future__ import annotations

import time

import orjson

from .errors import ErrorInfo
from .records import Progress, WorkerInfo

__all__ = [
    "error_from_json",
    "error_to_json",
    "progress_from_json",
    "progress_to_json",
    "worker_from_json",
    "worker_to_json",
]


def error_to_json(error: ErrorInfo) -> bytes:
    return orjson.dumps({"type": error.type, "message": error.message, "tb": error.traceback})


def error_from_json(raw: bytes) -> ErrorInfo:
    data = orjson.loads(raw)
    return ErrorInfo(data.get("type", ""), data.get("message", ""), data.get("tb", ""))


def progress_to_json(progress: Progress) -> bytes:
    return orjson.dumps({"value": progress.value, "message": progress.message})


def progress_from_json(raw: bytes) -> Progress:
    data = orjson.loads(raw)
    return Progress(float(data.get("value", 0.0)), data.get("message"))


def worker_to_json(worker: WorkerInfo) -> bytes:
    """A heartbeat, stamped with the time it is written."""
    return orjson.dumps(
        {
            "id": worker.id,
            "host": worker.host,
            "pid": worker.pid,
            "queues": list(worker.queues),
            "concurrency": worker.concurrency,
            "in_flight": worker.in_flight,
            "started_at": worker.started_at,
            "last_seen": time.time(),
            "extra": worker.extra,
        }
    )


def worker_from_json(raw: bytes) -> WorkerInfo:
    data = orjson.loads(raw)
    data["queues"] = tuple(data["queues"])
    return WorkerInfo(**data)
