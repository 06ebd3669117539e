"""Turning decoded JSON back into typed arguments: the libraries asyncq could use, side by
side on the same value.

    pip install msgspec pydantic cattrs
    python benchmarks/typed_arguments.py [--rounds 20000]

Each converts the JSON form of one order (a dataclass holding a UUID, an aware datetime,
an enum, a date, a frozenset and a list of three line dataclasses with Decimals) back into
the dataclass, checking every field: msgspec's ``convert``, pydantic's ``TypeAdapter``
(``validate_python``), and cattrs' ``structure`` (a preconf JSON converter). It prints the
time per conversion, whether each result equals the original, and the versions.
"""

from __future__ import annotations

import argparse
import enum
import platform
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from importlib.metadata import version
from typing import Any
from uuid import UUID, uuid4

import orjson


class Currency(enum.Enum):
    EUR = "eur"
    USD = "usd"


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


def sample() -> Order:
    return Order(
        id=uuid4(),
        placed_at=datetime(2026, 12, 1, 9, 30, 15, 123456, tzinfo=UTC),
        currency=Currency.EUR,
        lines=[Line(f"sku-{i}", i + 1, Decimal(f"{i}.99")) for i in range(3)],
        ship_on=date(2026, 12, 3),
        tags=frozenset({"gift", "express"}),
    )


def as_json(order: Order) -> Any:
    def default(value: Any) -> Any:
        if isinstance(value, Decimal):
            return str(value)
        if isinstance(value, frozenset):
            return sorted(value)
        raise TypeError

    return orjson.loads(orjson.dumps(order, default=default))


def converters() -> dict[str, Any]:
    import cattrs.preconf.json
    import msgspec
    import pydantic

    adapter = pydantic.TypeAdapter(Order)
    cattrs_converter = cattrs.preconf.json.make_converter()
    # cattrs knows neither type out of the box: each needs a hook of the caller's.
    cattrs_converter.register_structure_hook(Decimal, lambda v, _: Decimal(v))
    cattrs_converter.register_structure_hook(UUID, lambda v, _: UUID(v))
    return {
        "msgspec.convert": lambda raw: msgspec.convert(raw, Order, str_keys=True),
        "pydantic TypeAdapter": adapter.validate_python,
        "cattrs structure": lambda raw: cattrs_converter.structure(raw, Order),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20_000)
    rounds = parser.parse_args().rounds
    order = sample()
    raw = as_json(order)
    print(f"python {platform.python_version()}, {rounds} conversions each, best of 3")
    for library in ("msgspec", "pydantic", "cattrs"):
        print(f"  {library} {version(library)}")
    print(f"{'library':<22} {'µs per conversion':>18}  equal")
    for name, convert in converters().items():
        best = float("inf")
        for _ in range(3):
            began = time.perf_counter()
            for _ in range(rounds):
                convert(raw)
            best = min(best, time.perf_counter() - began)
        print(f"{name:<22} {best / rounds * 1e6:>18.2f}  {convert(raw) == order}")


if __name__ == "__main__":
    main()
