"""How job records and heartbeats are written to Redis and read back as asyncq's own
dataclasses, and the values every settle script takes from a settlement. Errors, progress
and heartbeats travel in the shared JSON form of ``asyncq.record_json``."""

from __future__ import annotations

from collections.abc import Mapping

from asyncq.record_json import (
    error_from_json,
    error_to_json,
    progress_from_json,
    progress_to_json,
    worker_from_json,
    worker_to_json,
)
from asyncq.records import JobInfo, JobStatus
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
