"""How a queue's dead-letter stream reads back: its entries as ``DeadLetter``s."""

from __future__ import annotations

from asyncq.errors import ErrorInfo
from asyncq.records import DeadLetter

from .records import error_from_json

__all__ = ["dead_letter"]


def dead_letter(queue: str, entry: bytes, fields: dict[bytes, bytes]) -> DeadLetter:
    """An entry of ``queue``'s dead-letter stream."""
    error = fields.get(b"error")
    return DeadLetter(
        id=fields.get(b"id", entry).decode(),
        queue=queue,
        body=fields.get(b"body", b""),
        error=error_from_json(error) if error else ErrorInfo("Unknown", ""),
        died_at=float(fields.get(b"died", 0)),
        task=fields.get(b"task", b"").decode(),
        cursor=entry.decode(),
    )
