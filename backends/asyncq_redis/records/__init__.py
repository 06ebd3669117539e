"""The Redis record layer: what every asyncq backend that keeps job records in Redis builds
on, the Redis backend itself and the AMQP backend's ``records=`` store alike. It is public:
a backend package imports it from here, never from ``asyncq_redis``'s other modules.

* :class:`QueueKeys`: where a queue's state lives (one hash tag per queue).
* The Lua fragments (:mod:`.lua`), each defined once: ``FINISH`` (store a job's end, free
  its key, announce it), ``IS_FINISHED``, ``CLAIM_KEY`` and ``RELEASE_KEY`` (an
  idempotency key), ``CLAIM`` (the start of an enqueue: the key and the record) and
  ``CANCEL_RECORD``; ``define()`` puts the ones a script uses ahead of its body.
* The codec: a record's hash as a ``JobInfo`` (``job_info``), errors as JSON, and
  ``settle_values``, what every settle script stores of a settlement.
* :class:`RedisStore`: a client with the backend's scripts loaded, batches of script calls
  in one round trip (:data:`Call`; ``run_chunked`` and ``settle_chunks`` split a batch of
  jobs into calls per queue and ``SCRIPT_CHUNK`` jobs), the registry of queues, the waits
  for finishes.
* :class:`RedisJobStore`: the ``JobStore`` base on all that (waits, the cancellation watch,
  heartbeats and workers); a subclass reads and cancels its records.
* The per-minute counts of finished attempts: ``count_calls`` (to send with a settle's
  calls) and ``read_minute_counts``.
"""

from . import minutes, permits, workers
from .client import RedisStore
from .codec import error_from_json, job_info, settle_values
from .jobstore import RedisJobStore
from .keys import QueueKeys
from .lua import (
    CANCEL_RECORD,
    CLAIM,
    CLAIM_KEY,
    FINISH,
    IS_FINISHED,
    RELEASE_KEY,
    Fragment,
    define,
)
from .minutes import count_calls, kept_minute_keys, read_minute_counts
from .scripting import SCRIPT_CHUNK, Call, settle_chunks

STORE_SCRIPTS = {**permits.STORE_SCRIPTS, **minutes.SCRIPTS, **workers.SCRIPTS}
"""The scripts the record layer runs by name: every RedisStore that serves it (the Redis
backend's, an AMQP record store's) registers them."""

__all__ = [
    "CANCEL_RECORD",
    "CLAIM",
    "CLAIM_KEY",
    "FINISH",
    "IS_FINISHED",
    "RELEASE_KEY",
    "SCRIPT_CHUNK",
    "STORE_SCRIPTS",
    "Call",
    "count_calls",
    "kept_minute_keys",
    "read_minute_counts",
    "Fragment",
    "QueueKeys",
    "RedisJobStore",
    "RedisStore",
    "define",
    "error_from_json",
    "job_info",
    "settle_chunks",
    "settle_values",
]
