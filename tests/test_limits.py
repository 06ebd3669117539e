"""Limits as the task decorator takes them: the rate strings, the checks, and the name of
the limit a job counts against (read from its arguments as the handler will see them)."""

from __future__ import annotations

import pytest

import asyncq
from asyncq import ConcurrencyLimit, RateLimit
from asyncq.limits import TaskLimits


@pytest.mark.parametrize(
    ("text", "limit", "per"),
    [
        ("100/s", 100, 1.0),
        ("10/m", 10, 60.0),
        ("1000/h", 1000, 3600.0),
        ("5/d", 5, 86400.0),
        ("3/10s", 3, 10.0),
        (" 7 / 0.5s ", 7, 0.5),
    ],
)
def test_rate_strings(text: str, limit: int, per: float) -> None:
    assert RateLimit.parse(text) == RateLimit(limit, per=per)


@pytest.mark.parametrize("text", ["", "100", "100/x", "/s", "1.5/s", "0/s", "10 per second"])
def test_bad_rate_strings_are_refused_with_the_form_expected(text: str) -> None:
    with pytest.raises(ValueError, match="rate_limit|limit must be"):
        RateLimit.parse(text)


@pytest.mark.parametrize(
    "make",
    [
        lambda: RateLimit(0),
        lambda: RateLimit(True),
        lambda: RateLimit(5, per=0),
        lambda: RateLimit(5, per=-1),
        lambda: RateLimit(5, key="not a name"),
        lambda: ConcurrencyLimit(0),
        lambda: ConcurrencyLimit(2.5),  # type: ignore[arg-type]
    ],
)
def test_bad_limits_are_refused(make: object) -> None:
    with pytest.raises(ValueError):
        make()  # type: ignore[operator]


def test_the_decorator_takes_strings_ints_and_limits_and_refuses_the_rest() -> None:
    app = asyncq.App("memory://limits-decorator")

    @app.task(rate_limit="10/m", concurrency_limit=3)
    async def a() -> None: ...

    assert a.rate_limit == RateLimit(10, per=60.0)
    assert a.concurrency_limit == ConcurrencyLimit(3)
    assert a.limited

    @app.task
    async def b() -> None: ...

    assert not b.limited
    with pytest.raises(ValueError, match="rate_limit must be"):
        app.task(name="c", rate_limit=10)(b.fn)  # type: ignore[call-overload]
    with pytest.raises(ValueError, match="concurrency_limit must be"):
        app.task(name="d", concurrency_limit="3")(b.fn)  # type: ignore[call-overload]


def test_a_keyed_limit_reads_its_argument_by_keyword_position_or_default() -> None:
    async def sync(account: str, tenant: str = "free", *, region: str = "eu") -> None: ...

    by_tenant = TaskLimits(sync, "app.sync", RateLimit(5, key="tenant"), None)
    assert by_tenant.rate(("acc", "t1"), {}) == "app.sync|t1"
    assert by_tenant.rate(("acc",), {"tenant": "t2"}) == "app.sync|t2"
    assert by_tenant.rate(("acc",), {}) == "app.sync|free"
    by_region = TaskLimits(sync, "app.sync", None, ConcurrencyLimit(1, key="region"))
    assert by_region.concurrency(("acc",), {"region": "us"}) == "app.sync|us"
    assert by_region.concurrency(("acc",), {}) == "app.sync|eu"
    # Values that are not strings are named by their repr; braces never reach the name
    # (they would be a Redis Cluster hash tag), nor does the separator.
    assert by_tenant.rate(("acc", 42), {}) == "app.sync|42"
    assert by_tenant.rate(("acc", "{x}|y"), {}) == "app.sync|%7Bx%7D%7Cy"
    unkeyed = TaskLimits(sync, "app.{sync}", RateLimit(5), None)
    assert unkeyed.rate((), {}) == "app.%7Bsync%7D"
