"""Arguments and results round-trip by the handler's annotations: what a producer passes
(a dataclass, a datetime, a UUID, a Decimal, an enum, a path, a pydantic model, containers
of them) is what the handler receives, and what it returns is what ``job.result()`` and
``job.info().result`` give. A value that does not convert is dead-lettered as BadArguments
naming the parameter and the field inside it."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock
from decimal import Decimal
from pathlib import Path, PurePosixPath
from typing import Any
from uuid import UUID, uuid4

import pydantic
import pytest

import asyncq
from asyncq import JobStatus
from asyncq.backend import Envelope, Outcome
from asyncq.serializer import encode_job, new_job_id
from asyncq.testing import Recorded, SettleLog

pytestmark = pytest.mark.anyio


class Currency(enum.Enum):
    EUR = "eur"
    USD = "usd"


class Priority(enum.IntEnum):
    LOW = 1
    HIGH = 2


@dataclass(frozen=True)
class Line:
    sku: str
    quantity: int
    price: Decimal


@dataclass(frozen=True)
class Order:
    id: UUID
    placed_at: datetime
    currency: Currency
    lines: list[Line]
    ship_on: date | None = None
    tags: frozenset[str] = field(default_factory=frozenset)


class Customer(pydantic.BaseModel):
    name: str
    since: date
    limit: Decimal


@dataclass(frozen=True)
class Receipt:
    order: UUID
    total: Decimal
    at: datetime


ORDER = Order(
    id=uuid4(),
    placed_at=datetime(2026, 12, 1, 9, 30, 15, 123456, tzinfo=UTC),
    currency=Currency.EUR,
    lines=[Line("a-1", 2, Decimal("9.99")), Line("b-2", 1, Decimal("0.10"))],
    ship_on=date(2026, 12, 3),
    tags=frozenset({"gift", "express"}),
)


async def test_rich_arguments_arrive_as_their_annotations_say(
    app: asyncq.App, settled: SettleLog, recorded: Recorded
) -> None:
    received: dict[str, Any] = {}

    @app.task
    async def place(
        order: Order,
        customer: Customer,
        when: clock,
        folder: Path,
        *extra: UUID,
        priority: Priority = Priority.LOW,
        by_day: dict[date, list[Decimal]] | None = None,
        pair: tuple[int, str] = (0, ""),
        **flags: datetime,
    ) -> Receipt:
        received.update(
            order=order,
            customer=customer,
            when=when,
            folder=folder,
            extra=extra,
            priority=priority,
            by_day=by_day,
            pair=pair,
            flags=flags,
        )
        total = sum((line.price * line.quantity for line in order.lines), Decimal(0))
        return Receipt(order.id, total, order.placed_at + timedelta(seconds=1))

    customer = Customer(name="Ada", since=date(2020, 2, 29), limit=Decimal("1000.00"))
    other = uuid4()
    due = datetime(2027, 1, 1, tzinfo=UTC)
    async with app, app.worker(concurrency=1):
        job = await place.enqueue(
            ORDER,
            customer,
            clock(23, 59, 1),
            PurePosixPath("/srv/reports"),  # type: ignore[arg-type]  # any path type
            other,
            priority=Priority.HIGH,
            by_day={date(2026, 12, 24): [Decimal("1.5")]},
            pair=(7, "x"),
            due=due,
        )
        assert await settled.wait(job.id, timeout=10) == [Outcome.SUCCEEDED]
        expected = Receipt(ORDER.id, Decimal("20.08"), ORDER.placed_at + timedelta(seconds=1))
        await recorded.result(job, expected)
        if info := await recorded.info(job):
            assert info.result == expected  # decoded, not bytes
            assert isinstance(info.raw_result, bytes)
    assert received == {
        "order": ORDER,
        "customer": customer,
        "when": clock(23, 59, 1),
        "folder": Path("/srv/reports"),
        "extra": (other,),
        "priority": Priority.HIGH,
        "by_day": {date(2026, 12, 24): [Decimal("1.5")]},
        "pair": (7, "x"),
        "flags": {"due": due},
    }
    assert type(received["folder"]) is type(Path("/srv/reports"))


async def test_plain_json_arguments_pass_through_unchanged(
    app: asyncq.App, settled: SettleLog, recorded: Recorded
) -> None:
    seen: list[Any] = []

    @app.task
    async def echo(a: int, b: str, c: list[float], d: dict[str, Any], e: Any, f=None) -> Any:  # type: ignore[no-untyped-def]
        seen.extend([a, b, c, d, e, f])
        return {"a": a}

    async with app, app.worker(concurrency=1):
        job = await echo.enqueue(1, "x", [1.5], {"k": [1, {"n": None}]}, (1, 2), f={"z": 1})
        assert await settled.wait(job.id, timeout=10) == [Outcome.SUCCEEDED]
        await recorded.result(job, {"a": 1})
    assert seen == [1, "x", [1.5], {"k": [1, {"n": None}]}, [1, 2], {"z": 1}]


@pytest.mark.parametrize(
    ("kwargs", "where"),
    [
        ({"order": {"id": "not-a-uuid"}}, "order"),
        ({"order": {**{"id": str(uuid4()), "placed_at": "2026-12-01T00:00:00Z"}}}, "order"),
        ({"when": "25:99"}, "when"),
        ({"customer": {"name": "Ada", "since": "2020-02-29", "limit": "lots"}}, "customer"),
    ],
)
async def test_a_value_that_does_not_convert_is_bad_arguments_naming_the_field(
    app: asyncq.App, settled: SettleLog, recorded: Recorded, kwargs: dict[str, Any], where: str
) -> None:
    runs: list[int] = []

    @app.task(name="typed", retries=3)
    async def typed(
        order: Order | None = None, when: clock | None = None, customer: Customer | None = None
    ) -> None:
        runs.append(1)

    job_id = new_job_id()
    body = encode_job(
        app.serializer,
        job_id,
        "typed",
        app.default_queue,
        [],
        kwargs,
        {},
        1,
        0.0,
        None,
        None,
    )
    async with app, app.worker(concurrency=1):
        await app.backend.enqueue([Envelope(job_id, app.default_queue, body, "typed")])
        job = app.get_job(job_id)
        assert await settled.wait(job_id, timeout=10) == [Outcome.DEAD]
        await recorded.failed(job)
        if info := await recorded.info(job):
            assert info.status is JobStatus.DEAD
            assert info.error is not None
            assert info.error.type == "BadArguments"
            assert f"argument {where!r} of typed" in info.error.message
        (dead,) = await app.dead_letters()
    assert runs == []
    assert (dead.id, dead.error.type) == (job_id, "BadArguments")
    assert f"argument {where!r} of typed" in dead.error.message


NESTED_FIELD = r"order\.lines\[1\]\.quantity"


async def test_a_nested_field_that_does_not_convert_is_named_by_its_path(
    app: asyncq.App, settled: SettleLog, recorded: Recorded
) -> None:
    @app.task(name="lines")
    async def lines(order: Order) -> None:
        pass

    broken = {
        "id": str(uuid4()),
        "placed_at": "2026-12-01T00:00:00Z",
        "currency": "eur",
        "lines": [{"sku": "a", "quantity": 1, "price": "1"}, {"sku": "b", "quantity": "two"}],
    }
    job_id = new_job_id()
    body = encode_job(
        app.serializer, job_id, "lines", app.default_queue, [broken], {}, {}, 1, 0.0, None, None
    )
    async with app, app.worker(concurrency=1):
        await app.backend.enqueue([Envelope(job_id, app.default_queue, body, "lines")])
        assert await settled.wait(job_id, timeout=10) == [Outcome.DEAD]
        await recorded.failed(app.get_job(job_id), match=NESTED_FIELD)
        (dead,) = await app.dead_letters()
    assert re.search(NESTED_FIELD, dead.error.message), dead.error.message
