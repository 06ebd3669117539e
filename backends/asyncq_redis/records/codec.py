"""How job records and heartbeats are written to Redis and read back as asyncq's own
dataclasses, and the values every settle script takes from a settlement. Errors travel as
JSON."""

from __future__ import annotations

import time
from collections.abc import Mapping

import orjson

from asyncq.errors import ErrorInfo
from asyncq.records import JobInfo, JobStatus, Progress, WorkerInfo
from asyncq.settlement import Settlement

__all__ = [
    "error_from_json",
    "error_to_json",
    "job_info",
    "progress_to_json",
    "settle_values",
    "worker_from_json",
    "worker_to_json",
]


def settle_values(s: Settlement) -> tuple[bytes, str, bytes, int | str]:
    """What a settle script stores of a settlement: its result (b'' for none), the eta of a
    retry ('0' for none), its error as JSON (b'' for none) and the record's TTL in ms (''
    for the store's own)."""
    error = error_to_json(s.error) if s.error is not None else b""
    eta = repr(s.eta) if s.eta is not None else "0"
    ttl = "" if s.result_ttl is None else max(int(s.result_ttl * 1000), 1)
    return s.result or b"", eta, error, ttl


def job_info(job_id: str, queue: str, record: Mapping[bytes, bytes]) -> JobInfo | None:
    """A job record's hash as a ``JobInfo``; None when there is none (no status)."""
    status = record.get(b"status")
    if status is None:
        return None
    error = record.get(b"error")
    eta = record.get(b"eta")
    progress = record.get(b"progress")
    return JobInfo(
        id=job_id,
        status=JobStatus(status.decode()),
        task=record.get(b"task", b"").decode(),
        queue=queue,
        attempt=int(record.get(b"attempt", 1)),
        eta=float(eta) if eta else None,
        raw_result=record.get(b"result") or None,
        error=error_from_json(error) if error else None,
        updated_at=float(record.get(b"updated", 0)),
        progress=progress_from_json(progress) if progress else None,
        snoozes=int(record.get(b"snoozes", 0)),
    )


def progress_to_json(progress: Progress) -> bytes:
    return orjson.dumps({"value": progress.value, "message": progress.message})


def progress_from_json(raw: bytes) -> Progress:
    data = orjson.loads(raw)
    return Progress(float(data.get("value", 0.0)), data.get("message"))


def error_to_json(error: ErrorInfo) -> bytes:
    return orjson.dumps({"type": error.type, "message": error.message, "tb": error.traceback})


def error_from_json(raw: bytes) -> ErrorInfo:
    data = orjson.loads(raw)
    return ErrorInfo(data.get("type", ""), data.get("message", ""), data.get("tb", ""))


def worker_to_json(worker: WorkerInfo) -> bytes:
    """A heartbeat, stamped with the time it is sent."""
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
