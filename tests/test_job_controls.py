"""What a handler raises or reports about its own job, refused where it is wrong: a snooze
with a bad delay, a progress value outside 0..1."""

from __future__ import annotations

import math
from datetime import timedelta

import pytest

import asyncq
from asyncq import JobContext


def test_a_snooze_takes_seconds_or_a_timedelta() -> None:
    assert asyncq.Snooze(2).delay == 2.0
    assert asyncq.Snooze(timedelta(minutes=1)).delay == 60.0


@pytest.mark.parametrize("delay", [-1, math.inf, math.nan, timedelta(seconds=-1)])
def test_a_snooze_with_a_bad_delay_is_refused_where_it_is_raised(delay: object) -> None:
    with pytest.raises(ValueError, match="Snooze delay"):
        asyncq.Snooze(delay)  # type: ignore[arg-type]


@pytest.mark.parametrize("delay", ["soon", None, True])
def test_a_snooze_delay_must_be_a_number(delay: object) -> None:
    with pytest.raises(TypeError, match="Snooze delay"):
        asyncq.Snooze(delay)  # type: ignore[arg-type]


def _context() -> JobContext:
    return JobContext("0" * 32, "t", "default", 1, False, 0.0)


@pytest.mark.anyio
@pytest.mark.parametrize("value", [-0.1, 1.5, math.nan, math.inf])
async def test_progress_outside_0_to_1_is_a_value_error(value: float) -> None:
    with pytest.raises(ValueError, match="progress must be from 0 to 1"):
        await _context().set_progress(value)


@pytest.mark.anyio
@pytest.mark.parametrize("value", ["half", None, True])
async def test_progress_must_be_a_number(value: object) -> None:
    with pytest.raises(TypeError, match="progress must be a number"):
        await _context().set_progress(value)  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_a_progress_message_must_be_text() -> None:
    with pytest.raises(TypeError, match="message must be a str"):
        await _context().set_progress(0.5, 42)  # type: ignore[arg-type]
