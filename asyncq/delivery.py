"""What travels between the core and a backend: an ``Envelope`` into the broker, a
``Delivery`` out of it to one worker."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Delivery", "Envelope"]


# Not frozen: a frozen dataclass sets each field through object.__setattr__, which makes
# building one five times dearer, and every enqueued job builds one. Nothing changes an
# envelope once built.
@dataclass(slots=True)
class Envelope:
    """A job on its way into the broker: the encoded message and what the broker indexes."""

    id: str
    queue: str
    body: bytes
    task: str = ""
    eta: float | None = None
    """Epoch seconds before which the job must not run; None runs it at once."""
    key: str | None = None
    """Idempotency key, scoped to the queue: while a job with this key is queued, running or
    succeeded (within the result TTL), enqueueing the key again returns that job's id and
    stores nothing."""
    priority: int = 0
    """0..9 (checked by the core): among a queue's ready jobs the highest starts first, FIFO
    within a priority. The body carries it too; a broker indexes by this copy."""
    replay: bool = False
    """A dead (or cancelled) job sent again under its own id: its old record is replaced.
    Any other envelope with the id of a job the broker knows stores nothing."""


@dataclass(slots=True)
class Delivery:
    """A job handed to one worker, held until settled."""

    id: str
    queue: str
    body: bytes
    receipt: Any = None
    """The backend's own handle (stream entry id, delivery tag, ...)."""
    redelivered: bool = False
    """True when an earlier delivery of this job went to a worker that was lost."""
    priority: int = 0
    """The priority the broker held the job at: a retry or a release goes back at it."""
