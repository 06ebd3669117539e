"""Schedules: which slots a cron or ``every`` schedule fires at, daylight saving time
included, and the one-line errors for a schedule that cannot be."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from asyncq.schedules import Schedule

BERLIN = ZoneInfo("Europe/Berlin")  # 2026: forward on 29 March at 02:00, back on 25 October


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def local(slots: list[datetime]) -> list[str]:
    return [s.astimezone(BERLIN).strftime("%m-%d %H:%M %Z") for s in slots]


def test_every_is_aligned_to_the_epoch_whatever_the_start() -> None:
    schedule = Schedule.of("tick", "t", every=15)
    after = utc("2026-12-02 10:00:07.5")
    assert schedule.slots(after, after + timedelta(seconds=40)) == [
        utc("2026-12-02 10:00:15"),
        utc("2026-12-02 10:00:30"),
        utc("2026-12-02 10:00:45"),
    ]
    # A slot itself is not after itself: the next one is.
    assert schedule.next_slot(utc("2026-12-02 10:00:15")) == utc("2026-12-02 10:00:30")
    assert schedule.previous_slot(utc("2026-12-02 10:00:15")) == utc("2026-12-02 10:00:15")
    assert Schedule.of("t2", "t", every=timedelta(minutes=1)).every == 60.0


def test_cron_slots_are_in_the_schedules_time_zone() -> None:
    schedule = Schedule.of("report", "r", cron="0 3 * * *", timezone="Europe/Berlin")
    slots = schedule.slots(utc("2026-12-01 00:00"), utc("2026-12-03 00:00"))
    assert slots == [utc("2026-12-01 02:00"), utc("2026-12-02 02:00")]  # 03:00 in winter
    assert schedule.when == "0 3 * * * (Europe/Berlin)"


def test_a_slot_in_the_hour_skipped_in_spring_fires_once_after_the_gap() -> None:
    schedule = Schedule.of("night", "n", cron="30 2 * * *", timezone="Europe/Berlin")
    slots = schedule.slots(utc("2026-03-27 12:00"), utc("2026-03-30 12:00"))
    assert local(slots) == ["03-28 02:30 CET", "03-29 03:00 CEST", "03-30 02:30 CEST"]


@pytest.mark.parametrize("at", ["30 2 * * *", "30 2 25 10 *"])
def test_a_slot_in_the_hour_repeated_in_autumn_fires_once_at_its_first_occurrence(
    at: str,
) -> None:
    schedule = Schedule.of("night", "n", cron=at, timezone="Europe/Berlin")
    slots = schedule.slots(utc("2026-10-24 12:00"), utc("2026-10-26 12:00"))
    assert "10-25 02:30 CEST" in local(slots)
    assert "10-25 02:30 CET" not in local(slots)
    # Asked from inside the repeated hour, after the first 02:30, it is not given again.
    assert schedule.next_slot(utc("2026-10-25 00:45")) > utc("2026-10-25 12:00")


def test_a_wildcard_hour_fires_at_each_real_instant_of_the_repeated_hour() -> None:
    schedule = Schedule.of("half", "h", cron="*/30 * * * *", timezone="Europe/Berlin")
    slots = schedule.slots(utc("2026-10-24 23:40"), utc("2026-10-25 02:00"))
    assert local(slots) == [
        "10-25 02:00 CEST",
        "10-25 02:30 CEST",
        "10-25 02:00 CET",
        "10-25 02:30 CET",
        "10-25 03:00 CET",
    ]
    assert slots == sorted(set(slots))  # distinct instants, half an hour apart


def test_six_fields_put_seconds_first() -> None:
    schedule = Schedule.of("fast", "f", cron="*/20 * * * * *")
    assert schedule.slots(utc("2026-12-02 10:00:05"), utc("2026-12-02 10:01:00")) == [
        utc("2026-12-02 10:00:20"),
        utc("2026-12-02 10:00:40"),
        utc("2026-12-02 10:01:00"),
    ]


def test_the_previous_slot_is_what_catch_up_fires() -> None:
    schedule = Schedule.of("report", "r", cron="0 3 * * *", timezone="Europe/Berlin")
    assert schedule.previous_slot(utc("2026-12-02 12:00")) == utc("2026-12-02 02:00")
    assert schedule.previous_slot(utc("2026-12-02 02:00")) == utc("2026-12-02 02:00")
    assert schedule.previous_slot(utc("2026-12-02 01:59")) == utc("2026-12-01 02:00")


BAD = {
    "neither": ({}, "give cron= or every=, exactly one of them"),
    "both": ({"cron": "* * * * *", "every": 5}, "give cron= or every=, exactly one of them"),
    "bad cron": ({"cron": "61 * * * *"}, "bad cron expression '61 * * * *': Bad minute"),
    "fields": ({"cron": "* * *"}, "bad cron expression '* * *': Wrong number of fields"),
    "zone": ({"cron": "* * * * *", "timezone": "Mars/Olympus"}, "unknown time zone"),
    "short every": ({"every": 0.5}, "every= must be at least 1 second"),
    "every text": ({"every": "5"}, "every= takes seconds or a timedelta"),
    "every zone": ({"every": 5, "timezone": "UTC"}, "a timezone= applies to cron= only"),
}


@pytest.mark.parametrize(("options", "message"), BAD.values(), ids=BAD.keys())
def test_a_schedule_that_cannot_be_is_one_line_naming_it(
    options: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError) as caught:
        Schedule.of("nightly", "t", **options)  # type: ignore[arg-type]
    text = str(caught.value)
    assert text.startswith("schedule 'nightly': "), text
    assert message in text, text
    assert "\n" not in text


@pytest.mark.parametrize("name", ["", "two words", "x" * 201])
def test_a_bad_schedule_name_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match="schedule name"):
        Schedule.of(name, "t", every=5)


def test_slots_need_aware_datetimes() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        Schedule.of("t", "t", every=5).next_slot(datetime(2026, 1, 1))
