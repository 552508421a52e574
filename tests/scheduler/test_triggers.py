"""When schedules fire: crontab weekdays, DST in Europe/Berlin, and bounded catch-up after a jump.

`fire_times` asks a trigger the way APScheduler 3 does: the first fire time from `now`, then each
next one from the previous. `due_after_jump` is APScheduler's walk over the fire times a jump of
the wall clock skipped (`Job._get_run_times`), done here so the test needs no private API.
"""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from agent.scheduler.triggers import build_trigger, crontab_weekdays

BERLIN = ZoneInfo("Europe/Berlin")
UTC = ZoneInfo("UTC")


def fire_times(trigger: object, now: datetime, n: int) -> list[datetime]:
    """The next `n` fire times from `now`, as APScheduler asks for them."""
    out: list[datetime] = []
    previous = None
    for _ in range(n):
        nxt = trigger.get_next_fire_time(previous, now)  # type: ignore[attr-defined]
        assert nxt is not None
        out.append(nxt)
        previous = now = nxt
    return out


def due_after_jump(trigger: object, scheduled: datetime, now: datetime) -> list[datetime]:
    """Every fire time APScheduler collects when it wakes at `now` with `scheduled` still due."""
    due = []
    nxt: datetime | None = scheduled
    while nxt is not None and nxt <= now:
        due.append(nxt)
        nxt = trigger.get_next_fire_time(nxt, now)  # type: ignore[attr-defined]
        assert len(due) < 10_000, "walked over every skipped fire time"
    return due


def cron(expr: str, zone: ZoneInfo = BERLIN, grace_s: float = 300.0) -> object:
    return build_trigger(cron=expr, every_s=None, zone=zone, grace_s=grace_s)


def local(year: int, month: int, day: int, hour: int, minute: int) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=BERLIN)


@pytest.mark.parametrize(
    ("field", "days"),
    [
        ("1-5", "mon,tue,wed,thu,fri"),
        ("0", "sun"),
        ("7", "sun"),
        ("6,0", "sun,sat"),
        ("*/2", "sun,tue,thu,sat"),
        ("1-7", "sun,mon,tue,wed,thu,fri,sat"),
        ("mon-wed", "mon,tue,wed"),
        ("*", "*"),
    ],
)
def test_weekdays_count_from_sunday_as_in_crontab(field: str, days: str) -> None:
    assert crontab_weekdays(field) == days


def test_a_weekday_schedule_skips_the_weekend() -> None:
    # 2026-12-04 is a Friday: the next runs are Friday, then Monday and Tuesday.
    times = fire_times(cron("0 22 * * 1-5"), local(2026, 12, 4, 12, 0), 3)
    assert [t.strftime("%a %H:%M") for t in times] == ["Fri 22:00", "Mon 22:00", "Tue 22:00"]


@pytest.mark.parametrize("field", ["8", "1-x", "5-1", "mon-fry", "1/0", ""])
def test_bad_weekdays_are_refused(field: str) -> None:
    with pytest.raises(ValueError, match="day of week"):
        crontab_weekdays(field)


def test_spring_forward_runs_a_missing_time_once_at_the_skipped_instant() -> None:
    # 2026-03-29: clocks go from 02:00 CET straight to 03:00 CEST; 02:30 does not exist.
    times = fire_times(cron("30 2 * * *"), local(2026, 3, 27, 12, 0), 3)
    assert [t.astimezone(UTC) for t in times] == [
        datetime(2026, 3, 28, 1, 30, tzinfo=UTC),  # 02:30 CET
        datetime(2026, 3, 29, 1, 30, tzinfo=UTC),  # shown as 03:30 CEST: the day's only run
        datetime(2026, 3, 30, 0, 30, tzinfo=UTC),  # 02:30 CEST
    ]


def test_autumn_runs_a_fixed_time_once_though_the_clock_shows_it_twice() -> None:
    # 2026-10-25: clocks go from 03:00 CEST back to 02:00 CET; 02:30 happens twice.
    times = fire_times(cron("30 2 * * *"), local(2026, 10, 23, 12, 0), 3)
    assert [t.astimezone(UTC) for t in times] == [
        datetime(2026, 10, 24, 0, 30, tzinfo=UTC),
        datetime(2026, 10, 25, 0, 30, tzinfo=UTC),  # the first 02:30 (CEST) only
        datetime(2026, 10, 26, 1, 30, tzinfo=UTC),
    ]


def test_autumn_keeps_an_hourly_schedule_running_through_both_hours() -> None:
    times = fire_times(cron("0 * * * *"), local(2026, 10, 25, 0, 30), 4)
    assert [t.astimezone(UTC).hour for t in times] == [23, 0, 1, 2]  # one hour apart, always


def test_an_interval_keeps_real_seconds_across_dst() -> None:
    start = local(2026, 10, 25, 1, 0)
    trigger = build_trigger(cron=None, every_s=3600, zone=BERLIN, grace_s=3600, start=start)
    times = fire_times(trigger, local(2026, 10, 25, 0, 30), 4)
    real = [t.astimezone(UTC) for t in times]  # aware datetimes in one zone subtract as wall
    gaps = {b - a for a, b in itertools.pairwise(real)}
    assert gaps == {timedelta(hours=1)}


def test_a_forward_jump_runs_a_daily_schedule_once_when_within_the_grace() -> None:
    trigger = cron("0 22 * * *", UTC)
    scheduled = datetime(2026, 6, 1, 22, 0, tzinfo=UTC)
    # 21:59 -> 22:03: the 22:00 run is 3 minutes late, within 5 minutes of grace.
    due = due_after_jump(trigger, scheduled, scheduled + timedelta(minutes=3))
    assert due == [scheduled]
    # Stepped a month on from a stale boot clock: days of skipped runs, and only the 22:00 of
    # the day stepped into (still within the grace) is due, last; APScheduler coalesces.
    now = datetime(2026, 7, 1, 22, 2, tzinfo=UTC)
    due = due_after_jump(trigger, scheduled, now)
    assert due[-1] == datetime(2026, 7, 1, 22, 0, tzinfo=UTC) and len(due) == 2
    # Stepped to the morning: the last 22:00 is beyond the grace; only the stale one is due,
    # which APScheduler then reports missed. The next run is tonight.
    now = datetime(2026, 7, 2, 9, 0, tzinfo=UTC)
    assert due_after_jump(trigger, scheduled, now) == [scheduled]
    assert trigger.get_next_fire_time(scheduled, now) == datetime(2026, 7, 2, 22, 0, tzinfo=UTC)  # type: ignore[attr-defined]


def test_a_year_long_jump_costs_a_bounded_walk_for_a_one_second_interval() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    trigger = build_trigger(cron=None, every_s=1, zone=UTC, grace_s=1, start=start)
    now = start + timedelta(days=365, seconds=0.5)
    due = due_after_jump(trigger, start, now)
    # The stale run, then the one run within the last second: coalesced into one run now.
    assert due == [start, start + timedelta(days=365)]
