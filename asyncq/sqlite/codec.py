"""How errors and progress are kept in a ``sqlite://`` file's nullable columns: the shared
JSON form (``asyncq.record_json``), with NULL for none."""

from __future__ import annotations

from .. import record_json
from ..errors import ErrorInfo
from ..record_json import worker_from_json, worker_to_json
from ..records import Progress

__all__ = [
    "error_from_json",
    "error_to_json",
    "progress_from_json",
    "progress_to_json",
    "worker_from_json",
    "worker_to_json",
]


def error_to_json(error: ErrorInfo | None) -> bytes | None:
    return None if error is None else record_json.error_to_json(error)


def error_from_json(raw: bytes | None) -> ErrorInfo | None:
    return record_json.error_from_json(raw) if raw else None


progress_to_json = record_json.progress_to_json


def progress_from_json(raw: bytes | None) -> Progress | None:
    return record_json.progress_from_json(raw) if raw else None
