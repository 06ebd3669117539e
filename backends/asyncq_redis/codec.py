"""How asyncq's records are written to Redis and read back: the arguments a settlement
passes to the SETTLE script, and job records, dead letters and worker heartbeats as
asyncq's own dataclasses. Errors travel as JSON."""

from __future__ import annotations

import time
from typing import Any

import orjson

from asyncq.backend import Outcome, Settlement
from asyncq.errors import ErrorInfo
from asyncq.records import DeadLetter, JobInfo, JobStatus, WorkerInfo

__all__ = [
    "dead_letter",
    "error_to_json",
    "job_info",
    "settle_args",
    "ttl_ms",
    "worker_from_json",
    "worker_to_json",
]


def settle_args(s: Settlement) -> list[Any]:
    """One delivery's arguments to SETTLE: outcome, entry, id, body, result, eta, error,
    task, and the record's TTL in ms ('' for the backend's)."""
    d = s.delivery
    outcome = s.outcome
    if outcome is Outcome.RETRY:
        body = s.retry_body or b""
    elif outcome in (Outcome.DEAD, Outcome.RELEASE):
        body = d.body
    else:
        body = b""
    error = error_to_json(s.error) if s.error is not None else b""
    eta = repr(s.eta) if s.eta is not None else "0"
    return [outcome.value, d.receipt, d.id, body, s.result or b"", eta, error, s.task, ttl_ms(s)]


def ttl_ms(s: Settlement) -> int | str:
    """The TTL a settlement's task asks for its record, in ms; '' for the default."""
    return "" if s.result_ttl is None else max(int(s.result_ttl * 1000), 1)


def job_info(job_id: str, queue: str, flat: list[bytes]) -> JobInfo | None:
    """A job record from the INFO script's flat field list; None when there is none."""
    raw = dict(zip(flat[::2], flat[1::2], strict=True))
    if b"status" not in raw:
        return None
    error = raw.get(b"error")
    eta = raw.get(b"eta")
    return JobInfo(
        id=job_id,
        status=JobStatus(raw[b"status"].decode()),
        task=raw.get(b"task", b"").decode(),
        queue=queue,
        attempt=int(raw.get(b"attempt", 1)),
        eta=float(eta) if eta else None,
        raw_result=raw.get(b"result") or None,
        error=_error_from_json(error) if error else None,
        updated_at=float(raw.get(b"updated", 0)),
    )


def dead_letter(queue: str, entry: bytes, fields: dict[bytes, bytes]) -> DeadLetter:
    error = fields.get(b"error")
    return DeadLetter(
        id=fields.get(b"id", entry).decode(),
        queue=queue,
        body=fields.get(b"body", b""),
        error=_error_from_json(error) if error else ErrorInfo("Unknown", ""),
        died_at=float(fields.get(b"died", 0)),
        task=fields.get(b"task", b"").decode(),
        cursor=entry.decode(),
    )


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


def error_to_json(error: ErrorInfo) -> bytes:
    return orjson.dumps({"type": error.type, "message": error.message, "tb": error.traceback})


def _error_from_json(raw: bytes) -> ErrorInfo:
    data = orjson.loads(raw)
    return ErrorInfo(data.get("type", ""), data.get("message", ""), data.get("tb", ""))
