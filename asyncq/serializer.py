"""The v1 wire format of a job, and the pluggable serializer that writes it.

A job travels as one object::

    {"v": 1, "id": "0193...", "task": "shop.charge", "queue": "default",
     "args": [...], "kwargs": {...}, "headers": {"traceparent": "..."},
     "attempt": 1, "enqueued_at": 1732630000.123, "eta": null, "key": null}

Optional fields are written only when they differ from their default: ``retries`` and
``timeout`` (per-job overrides), ``priority`` (1..9; absent means 0) and ``scheduled_for``
(the time a periodic or delayed job was meant to run), so a job that uses
none of them has the same bytes as before they existed. Unknown fields are ignored when
decoding, so a newer producer can add fields without breaking older workers. Results are
written with the same serializer.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import PurePath
from typing import Any, Protocol

import orjson

__all__ = [
    "MAX_PRIORITY",
    "DecodeError",
    "Message",
    "OrjsonSerializer",
    "Serializer",
    "check_priority",
    "new_job_id",
]

WIRE_VERSION = 1

MAX_PRIORITY = 9
"""Priorities run from 0 (the default) to this; higher runs first."""


def check_priority(priority: object) -> int:
    """``priority`` if it is an int from 0 to MAX_PRIORITY, else ``ValueError``."""
    if type(priority) is not int or not 0 <= priority <= MAX_PRIORITY:
        raise ValueError(
            f"priority must be an integer from 0 to {MAX_PRIORITY} (higher runs first), "
            f"not {priority!r}"
        )
    return priority


class DecodeError(ValueError):
    """A message body that is not a v1 job."""


class Serializer(Protocol):
    """Turns plain data (job fields, results) into bytes and back."""

    def dumps(self, value: Any) -> bytes:
        """Encode; raise ``TypeError`` for a value this format cannot carry."""
        ...

    def loads(self, data: bytes) -> Any:
        """Decode; raise ``ValueError`` for bytes that are not this format."""
        ...


class OrjsonSerializer:
    """JSON via orjson: fast, strict (no NaN surprises). Dataclasses, datetimes, dates,
    times, UUIDs and enums are orjson's own; Decimals and paths become strings, sets and
    frozensets arrays, pydantic models their JSON-mode dump. A worker turns them back into
    what the handler's annotations name (see :mod:`asyncq.conversion`)."""

    __slots__ = ()

    def dumps(self, value: Any) -> bytes:
        try:
            # orjson hands back its whole write buffer (4 KiB at least); a broker that keeps
            # many messages in memory would hold every one. Copying trims it to size, and is
            # cheaper than the memory it frees.
            return bytes(memoryview(orjson.dumps(value, default=_to_json)))
        except orjson.JSONEncodeError as exc:  # a TypeError subclass
            if "Dict key must be str" not in str(exc):
                raise TypeError(str(exc)) from None  # "Type is not JSON serializable: Foo"
        # Keys that are dates, numbers, UUIDs or enums, written as strings. Only then: the
        # option costs every dumps about 40% more.
        try:
            encoded = orjson.dumps(value, default=_to_json, option=orjson.OPT_NON_STR_KEYS)
        except orjson.JSONEncodeError as exc:
            raise TypeError(str(exc)) from None
        return bytes(memoryview(encoded))

    def loads(self, data: bytes) -> Any:
        return orjson.loads(data)


def _to_json(value: Any) -> Any:
    """What orjson cannot write itself; orjson calls it only for such values."""
    if isinstance(value, Decimal | PurePath):
        return str(value)
    if isinstance(value, set | frozenset):
        return list(value)
    dump = getattr(value, "model_dump", None)  # a pydantic model, without importing pydantic
    if dump is not None and not isinstance(value, type):
        return dump(mode="json")
    raise TypeError(f"Type is not JSON serializable: {type(value).__name__}")


@dataclass(slots=True)  # not frozen: built twice per job on the hot path, and frozen
class Message:  # dataclasses pay for object.__setattr__ on every field
    """One job as it travels through the broker. Treat it as read-only."""

    id: str
    task: str
    queue: str
    args: tuple[Any, ...] | list[Any] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    attempt: int = 1
    enqueued_at: float = 0.0
    eta: float | None = None
    key: str | None = None
    retries: int | None = None
    """Retries allowed for this job, overriding its task's (``options(retries=...)``)."""
    timeout: float | None = None
    """Seconds each attempt may run, overriding its task's (``options(timeout=...)``)."""
    priority: int = 0
    """0..9, higher first; kept by every later attempt (retries, delays, snoozes)."""
    scheduled_for: float | None = None
    """When the job was meant to run (epoch seconds): a periodic job's slot, a delayed
    job's ``at=``/``delay=`` time; None for a job that was to run at once. Retries and
    snoozes keep it."""

    def encode(self, serializer: Serializer) -> bytes:
        return encode_job(
            serializer,
            self.id,
            self.task,
            self.queue,
            self.args,
            self.kwargs,
            self.headers,
            self.attempt,
            self.enqueued_at,
            self.eta,
            self.key,
            self.retries,
            self.timeout,
            self.priority,
            self.scheduled_for,
        )

    @classmethod
    def decode(cls, body: bytes, serializer: Serializer) -> Message:
        try:
            data = serializer.loads(body)
        except ValueError as exc:
            raise DecodeError(f"body is not valid for the serializer: {exc}") from None
        if not isinstance(data, dict):
            raise DecodeError(f"expected an object, got {type(data).__name__}")
        if data.get("v") != WIRE_VERSION:
            raise DecodeError(f"unsupported wire version {data.get('v')!r}")
        get = data.get
        try:
            msg = cls(
                data["id"],
                data["task"],
                data["queue"],
                get("args") or (),
                get("kwargs") or {},
                get("headers") or {},
                get("attempt", 1),
                get("enqueued_at", 0.0),
                get("eta"),
                get("key"),
                get("retries"),
                get("timeout"),
                # Positional: calling a class with keywords makes a dict per call.
                get("priority", 0),
                get("scheduled_for"),
            )
        except KeyError as exc:
            raise DecodeError(f"missing field {exc.args[0]!r}") from None
        if not (
            type(msg.id) is str
            and type(msg.task) is str
            and type(msg.queue) is str
            and type(msg.args) in (list, tuple)
            and type(msg.kwargs) is dict
            and type(msg.headers) is dict
            and type(msg.attempt) is int
            and (msg.retries is None or (type(msg.retries) is int and msg.retries >= 0))
            and (msg.timeout is None or (type(msg.timeout) in (int, float) and msg.timeout > 0))
            and type(msg.priority) is int
            and 0 <= msg.priority <= MAX_PRIORITY
            and (msg.scheduled_for is None or type(msg.scheduled_for) in (int, float))
        ):
            raise DecodeError("a field has the wrong type")
        return msg

    def next_attempt(self, eta: float | None) -> Message:
        """The next attempt of this job, due at ``eta``: the same job (priority included)
        with the attempt counted up."""
        return replace(self, attempt=self.attempt + 1, eta=eta)

    def snoozed(self, eta: float) -> Message:
        """The same attempt, to run again at ``eta``."""
        return replace(self, eta=eta)


def encode_job(
    serializer: Serializer,
    job_id: str,
    task: str,
    queue: str,
    args: tuple[Any, ...] | list[Any],
    kwargs: dict[str, Any],
    headers: dict[str, str],
    attempt: int,
    enqueued_at: float,
    eta: float | None,
    key: str | None,
    retries: int | None = None,
    timeout: float | None = None,
    priority: int = 0,
    scheduled_for: float | None = None,
) -> bytes:
    """The v1 wire form of a job; producers call it directly, without building a Message.
    The per-job overrides and a priority above 0 are written only when set (older workers
    ignore them)."""
    job = {
        "v": WIRE_VERSION,
        "id": job_id,
        "task": task,
        "queue": queue,
        "args": args,
        "kwargs": kwargs,
        "headers": headers,
        "attempt": attempt,
        "enqueued_at": enqueued_at,
        "eta": eta,
        "key": key,
    }
    if retries is not None:
        job["retries"] = retries
    if timeout is not None:
        job["timeout"] = timeout
    if priority:
        job["priority"] = priority
    if scheduled_for is not None:
        job["scheduled_for"] = scheduled_for
    return serializer.dumps(job)


def new_job_id() -> str:
    """A UUIDv7 (RFC 9562) as 32 hex digits: unique, and sorting by id sorts by creation time."""
    ms = time.time_ns() // 1_000_000
    # Ids must be unique, not secret: the random module (seeded from os.urandom, and reseeded
    # in a forked child) is several times cheaper per id than a system call.
    rand = random.getrandbits(74)
    # 48 bits of milliseconds, version 7, 12 random bits, variant 0b10, 62 random bits.
    value = (ms & 0xFFFF_FFFF_FFFF) << 80
    value |= 0x7 << 76
    value |= (rand >> 62) << 64
    value |= 0b10 << 62
    value |= rand & 0x3FFF_FFFF_FFFF_FFFF
    return f"{value:032x}"
