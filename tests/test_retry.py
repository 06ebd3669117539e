"""Backoff: exponential ceiling, capped, with full jitter; and Retry's own validation."""

from __future__ import annotations

import math

import pytest

from asyncq import Backoff, Retry


def test_ceiling_grows_exponentially_from_base() -> None:
    backoff = Backoff(base=0.5, factor=2.0, cap=1000.0)
    assert [backoff.ceiling(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 4.0, 8.0]
    assert Backoff(base=1.0, factor=3.0).ceiling(4) == 27.0


def test_ceiling_is_capped() -> None:
    backoff = Backoff(base=1.0, factor=2.0, cap=10.0)
    assert backoff.ceiling(4) == 8.0
    assert backoff.ceiling(5) == 10.0
    assert backoff.ceiling(50) == 10.0


def test_no_overflow_for_huge_attempt_numbers() -> None:
    backoff = Backoff(base=1.0, factor=2.0, cap=60.0)
    assert backoff.ceiling(10_000) == 60.0
    delay = backoff.delay(10_000)
    assert math.isfinite(delay)
    assert 0.0 <= delay <= 60.0
    assert Backoff(jitter=False, cap=60.0).delay(10_000) == 60.0


def test_full_jitter_spreads_over_zero_to_ceiling() -> None:
    backoff = Backoff(base=4.0, factor=2.0, cap=100.0)
    ceiling = backoff.ceiling(3)
    assert ceiling == 16.0
    delays = [backoff.delay(3) for _ in range(2000)]
    assert all(0.0 <= d <= ceiling for d in delays)
    # Full jitter: the whole window is used, not a band around the ceiling.
    assert min(delays) < ceiling * 0.1
    assert max(delays) > ceiling * 0.9
    assert len(set(delays)) > 1000


def test_without_jitter_the_delay_is_the_ceiling() -> None:
    backoff = Backoff(base=0.25, factor=2.0, cap=1.0, jitter=False)
    assert [backoff.delay(n) for n in range(1, 5)] == [0.25, 0.5, 1.0, 1.0]


def test_defaults_are_sane() -> None:
    backoff = Backoff()
    assert backoff.ceiling(1) == backoff.base > 0
    assert backoff.ceiling(10_000) == backoff.cap


@pytest.mark.parametrize(
    "kwargs",
    [{"base": -1.0}, {"cap": -0.1}, {"factor": 0.5}],
    ids=["negative-base", "negative-cap", "shrinking-factor"],
)
def test_invalid_backoff_is_rejected(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Backoff(**kwargs)  # type: ignore[arg-type]


def test_retry_delay_must_not_be_negative() -> None:
    with pytest.raises(ValueError):
        Retry(delay=-1)
    assert Retry(delay=2.5).delay == 2.5
    assert Retry().delay is None
