"""One log line per job outcome, on the ``asyncq.job`` logger, and a JSON formatter for log
pipelines (``asyncq run --log-format json``).

Every outcome line carries the job's fields as the record's ``job`` attribute (a dict:
``job_id``, ``task``, ``queue``, ``attempt``, ``outcome``, ``duration_ms``, ``trace_id``, and
for failures ``error_type``/``error`` and a retry's ``retry_in_s``), so a formatter of the
app's own can use them as well as ``JsonFormatter`` does.

Levels: a success, a cancellation and a release are INFO, a retry WARNING, a dead letter
ERROR; a prefetched job handed back unstarted is DEBUG.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

import orjson

from .settlement import Outcome, Settlement

__all__ = ["JsonFormatter", "job_finished"]

log = logging.getLogger("asyncq.job")

_LEVELS = {
    Outcome.SUCCEEDED: logging.INFO,
    Outcome.RETRY: logging.WARNING,
    Outcome.SNOOZE: logging.INFO,
    Outcome.DEAD: logging.ERROR,
    Outcome.CANCELLED: logging.INFO,
    Outcome.RELEASE: logging.INFO,
}


def job_finished(
    settlement: Settlement,
    task: str,
    started: bool,
    duration: float,
    trace_id: str | None,
) -> None:
    """Log how one attempt ended. ``started``: whether its handler ran at all."""
    outcome = settlement.outcome
    level = _LEVELS[outcome] if started else logging.DEBUG
    if not log.isEnabledFor(level):
        return
    delivery = settlement.delivery
    fields: dict[str, Any] = {
        "job_id": delivery.id,
        "task": task,
        "queue": delivery.queue,
        "attempt": settlement.attempt,
        "outcome": outcome.label,
        "duration_ms": round(duration * 1000, 3),
        "trace_id": trace_id,
    }
    head = f"job {delivery.id} {task or '?'} on {delivery.queue} attempt {settlement.attempt}"
    took = f"{duration * 1000:.1f} ms"
    error = settlement.error
    if error is not None:
        fields["error_type"], fields["error"] = error.type, error.message
    if outcome is Outcome.SUCCEEDED:
        text = f"{head} succeeded in {took}"
    elif outcome is Outcome.RETRY:
        retry_in = max((settlement.eta or 0.0) - time.time(), 0.0)
        fields["retry_in_s"] = round(retry_in, 3)
        text = f"{head} failed in {took}, retrying in {retry_in:.2f} s: {error}"
    elif outcome is Outcome.SNOOZE:
        snooze_for = max((settlement.eta or 0.0) - time.time(), 0.0)
        fields["snooze_s"] = round(snooze_for, 3)
        text = f"{head} snoozed after {took}, running again in {snooze_for:.2f} s"
    elif outcome is Outcome.DEAD:
        text = f"{head} failed in {took}, dead-lettered: {error}"
    elif outcome is Outcome.CANCELLED:
        text = f"{head} cancelled after {took}"
    elif started:
        text = f"{head} returned to its queue unfinished after {took}: the worker is stopping"
    else:
        text = f"job {delivery.id} on {delivery.queue} returned to its queue unstarted"
    if trace_id is not None:
        text += f" (trace {trace_id})"
    log.log(level, "%s", text, extra={"job": fields})


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time`` (UTC, ISO 8601), ``level``, ``logger``,
    ``message``, a job outcome's fields at the top level, and ``exception`` when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        job = getattr(record, "job", None)
        if isinstance(job, dict):
            entry.update(job)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        return orjson.dumps(entry, default=str).decode()
