"""The v1 wire format, its decoder's strictness, and job ids."""

from __future__ import annotations

import time
import uuid
from datetime import date
from decimal import Decimal
from pathlib import PurePosixPath
from typing import Any

import orjson
import pydantic
import pytest

from asyncq import OrjsonSerializer
from asyncq.serializer import DecodeError, Message, new_job_id

WIRE_FIELDS = {
    "v",
    "id",
    "task",
    "queue",
    "args",
    "kwargs",
    "headers",
    "attempt",
    "enqueued_at",
    "eta",
    "key",
}

serializer = OrjsonSerializer()


def sample() -> Message:
    return Message(
        id=new_job_id(),
        task="shop.charge",
        queue="payments",
        args=(1, "two"),
        kwargs={"amount": 9.5},
        headers={"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
        attempt=2,
        enqueued_at=1732630000.123,
        eta=1732630060.0,
        key="order-42",
    )


def wire(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads(sample().encode(serializer))
    data.update(changes)
    return data


def test_v1_wire_fields_are_exactly_the_documented_ones() -> None:
    msg = sample()
    data = orjson.loads(msg.encode(serializer))
    assert set(data) == WIRE_FIELDS
    assert data["v"] == 1
    assert data == {
        "v": 1,
        "id": msg.id,
        "task": "shop.charge",
        "queue": "payments",
        "args": [1, "two"],
        "kwargs": {"amount": 9.5},
        "headers": msg.headers,
        "attempt": 2,
        "enqueued_at": 1732630000.123,
        "eta": 1732630060.0,
        "key": "order-42",
    }


def test_encode_decode_round_trip() -> None:
    msg = sample()
    back = Message.decode(msg.encode(serializer), serializer)
    assert back.id == msg.id
    assert back.task == msg.task
    assert back.queue == msg.queue
    assert list(back.args) == list(msg.args)
    assert back.kwargs == msg.kwargs
    assert back.headers == msg.headers
    assert back.attempt == msg.attempt
    assert back.enqueued_at == msg.enqueued_at
    assert back.eta == msg.eta
    assert back.key == msg.key


def test_unknown_future_fields_are_ignored() -> None:
    body = orjson.dumps(wire(priority=5, trace={"nested": True}))
    msg = Message.decode(body, serializer)
    assert msg.task == "shop.charge"
    assert msg.attempt == 2


def test_optional_fields_default() -> None:
    minimal = {"v": 1, "id": new_job_id(), "task": "t", "queue": "q"}
    msg = Message.decode(orjson.dumps(minimal), serializer)
    assert (list(msg.args), msg.kwargs, msg.headers) == ([], {}, {})
    assert (msg.attempt, msg.eta, msg.key) == (1, None, None)


@pytest.mark.parametrize(
    "body",
    [
        b"\x00not json",
        b"",
        orjson.dumps([1, 2, 3]),
        orjson.dumps("a string"),
        orjson.dumps(None),
        orjson.dumps(wire(v=2)),
        orjson.dumps(wire(v="1")),
        orjson.dumps({k: v for k, v in wire().items() if k != "v"}),
        orjson.dumps({k: v for k, v in wire().items() if k != "id"}),
        orjson.dumps({k: v for k, v in wire().items() if k != "task"}),
        orjson.dumps({k: v for k, v in wire().items() if k != "queue"}),
        orjson.dumps(wire(args="not a list")),
        orjson.dumps(wire(kwargs=[1])),
        orjson.dumps(wire(attempt="2")),
        orjson.dumps(wire(task=7)),
    ],
    ids=[
        "garbage",
        "empty",
        "array",
        "string",
        "null",
        "version-2",
        "version-as-string",
        "no-version",
        "no-id",
        "no-task",
        "no-queue",
        "args-not-a-list",
        "kwargs-not-an-object",
        "attempt-not-an-int",
        "task-not-a-string",
    ],
)
def test_bad_bodies_are_decode_errors(body: bytes) -> None:
    with pytest.raises(DecodeError):
        Message.decode(body, serializer)


def test_decode_error_is_a_value_error() -> None:
    assert issubclass(DecodeError, ValueError)


def test_orjson_serializer_errors() -> None:
    with pytest.raises(TypeError):
        serializer.dumps(object())
    with pytest.raises(TypeError):
        serializer.dumps({1j: "complex key"})
    with pytest.raises(ValueError):
        serializer.loads(b"{")
    assert serializer.loads(serializer.dumps({"a": [1, None]})) == {"a": [1, None]}


def test_next_attempt_counts_up_and_sets_eta() -> None:
    msg = sample()
    nxt = msg.next_attempt(123.0)
    assert (nxt.attempt, nxt.eta, nxt.id) == (msg.attempt + 1, 123.0, msg.id)


def test_job_id_is_a_uuid7_in_32_hex_digits() -> None:
    before_ms = time.time_ns() // 1_000_000
    job_id = new_job_id()
    after_ms = time.time_ns() // 1_000_000
    assert len(job_id) == 32
    assert job_id == job_id.lower()
    value = int(job_id, 16)
    assert (value >> 76) & 0xF == 7  # version
    assert (value >> 62) & 0b11 == 0b10  # RFC 9562 variant
    parsed = uuid.UUID(hex=job_id)
    assert parsed.version == 7
    assert parsed.variant == uuid.RFC_4122
    assert before_ms <= value >> 80 <= after_ms  # the leading 48 bits are the time in ms


def test_job_ids_are_unique() -> None:
    ids = {new_job_id() for _ in range(10_000)}
    assert len(ids) == 10_000


def test_job_ids_made_later_sort_later() -> None:
    ids = []
    for _ in range(5):
        ids.append(new_job_id())
        # Cross into the next millisecond; within one millisecond the order is random.
        now = time.time_ns() // 1_000_000
        while time.time_ns() // 1_000_000 == now:
            pass
    assert sorted(ids) == ids
    assert len({int(i, 16) >> 80 for i in ids}) == 5


def test_per_job_overrides_travel_only_when_set() -> None:
    plain = orjson.loads(sample().encode(serializer))
    assert "retries" not in plain and "timeout" not in plain
    overridden = Message(**{**_fields(sample()), "retries": 0, "timeout": 2.5})
    decoded = Message.decode(overridden.encode(serializer), serializer)
    assert (decoded.retries, decoded.timeout) == (0, 2.5)
    for bad in ({"retries": -1}, {"retries": "3"}, {"timeout": 0}, {"timeout": "1"}):
        with pytest.raises(DecodeError, match="wrong type"):
            Message.decode(orjson.dumps(wire(**bad)), serializer)


def test_priority_travels_only_above_zero_and_survives_a_retry() -> None:
    plain = sample()
    assert "priority" not in orjson.loads(plain.encode(serializer))
    assert Message.decode(plain.encode(serializer), serializer).priority == 0
    urgent = Message(**{**_fields(plain), "priority": 9})
    body = urgent.encode(serializer)
    assert orjson.loads(body)["priority"] == 9
    decoded = Message.decode(body, serializer)
    assert decoded.priority == 9
    assert decoded.next_attempt(eta=None).priority == 9
    for bad in ({"priority": 10}, {"priority": -1}, {"priority": "9"}, {"priority": True}):
        with pytest.raises(DecodeError, match="wrong type"):
            Message.decode(orjson.dumps(wire(**bad)), serializer)


def test_priority_zero_leaves_the_bytes_as_they_were() -> None:
    # An explicit 0 and no priority at all encode the same: old workers see nothing new.
    msg = sample()
    assert Message(**{**_fields(msg), "priority": 0}).encode(serializer) == msg.encode(serializer)


def _fields(msg: Message) -> dict[str, Any]:
    return {name: getattr(msg, name) for name in Message.__dataclass_fields__}


def test_values_json_lacks_are_written_as_strings_and_arrays() -> None:
    class Model(pydantic.BaseModel):
        when: date

    value = {
        "price": Decimal("1.10"),
        "path": PurePosixPath("/a/b"),
        "tags": {"x"},
        "frozen": frozenset({1}),
        "model": Model(when=date(2026, 1, 2)),
        "keyed": {date(2026, 1, 2): 1, 7: "seven", uuid.UUID(int=1): None},
    }
    assert orjson.loads(serializer.dumps(value)) == {
        "price": "1.10",
        "path": "/a/b",
        "tags": ["x"],
        "frozen": [1],
        "model": {"when": "2026-01-02"},
        "keyed": {"2026-01-02": 1, "7": "seven", "00000000-0000-0000-0000-000000000001": None},
    }
    with pytest.raises(TypeError, match="not JSON serializable: object"):
        serializer.dumps({"x": object()})
    with pytest.raises(TypeError, match="not JSON serializable"):
        serializer.dumps({1: object()})
