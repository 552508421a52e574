"""When a user schedule fires: APScheduler 3 triggers with crontab weekdays and bounded catch-up.

Three things the stock triggers do not do the way a schedule in a config should:

- Weekdays: APScheduler 3 numbers them from Monday = 0, crontab from Sunday = 0 (its issue
  286, fixed only in 4.x). `cron_trigger` rewrites the fifth field into day names, so
  `0 22 * * 1-5` means Monday to Friday, as it does in every crontab.
- Catch-up: after the wall clock jumps forward, APScheduler asks the trigger for every fire time
  it skipped, one by one; a one-second interval across a year is 31 million calls, minutes of
  scheduler CPU. `CatchUp` starts the walk at the misfire grace instead: the runs skipped before
  it would be missed anyway (and a coalesced job runs once either way).
- The repeated autumn hour: a cron with fixed hours (no `*` in the hour field) runs once at a
  wall time the clock shows twice, the first time, as cron(8) does; hourly or `*/n` hours run
  through both hours. A wall time that does not exist (spring forward) runs once, at the instant
  the clock skips it (02:30 in Europe/Berlin runs at 03:30 CEST): APScheduler's own behaviour.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, tzinfo
from typing import Any

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_DAY_ITEM = re.compile(r"^(?P<range>\*|[a-z0-9]+(?:-[a-z0-9]+)?)(?:/(?P<step>\d+))?$")


def _day_number(text: str) -> int:
    if text.isdigit() and 0 <= int(text) <= 7:
        return int(text) % 7  # 7 is Sunday too
    if text[:3] in _DAYS and len(text) == 3:
        return _DAYS.index(text)
    raise ValueError(f"day of week {text!r} is not 0-7 or sun-sat")


def crontab_weekdays(field: str) -> str:
    """The crontab day-of-week field (0 or 7 = Sunday) as APScheduler day names."""
    if field == "*":
        return "*"
    days: set[int] = set()
    for item in field.lower().split(","):
        found = _DAY_ITEM.match(item)
        if found is None:
            raise ValueError(f"day of week {item!r} is not a day, a range or a step")
        step = int(found["step"] or 1)
        if step < 1:
            raise ValueError(f"day of week {item!r}: the step must be at least 1")
        span = found["range"]
        if span == "*":
            first, last = 0, 6
        elif "-" in span:
            low, high = span.split("-")
            first, last = _day_number(low), _day_number(high)
            last = 7 if high == "7" else last  # 1-7 is Monday to Sunday
            if first > last:
                raise ValueError(f"day of week {item!r}: the range runs backwards")
        else:
            first = last = _day_number(span)
        days.update(d % 7 for d in range(first, last + 1, step))
    return ",".join(_DAYS[d] for d in sorted(days))


def cron_trigger(expr: str, zone: tzinfo) -> CronTrigger:
    """A CronTrigger for a five-field crontab line in `zone`; ValueError naming what is wrong."""
    fields = expr.split()
    if len(fields) != 5:
        raise ValueError(
            f"a cron expression has 5 fields (minute hour day month weekday), got {len(fields)}"
        )
    minute, hour, day, month, weekday = fields
    return CronTrigger(
        minute=minute,
        hour=hour,
        day=day,
        month=month,
        day_of_week=crontab_weekdays(weekday),
        timezone=zone,
    )


class CatchUp(BaseTrigger):  # type: ignore[misc]  # APScheduler ships no types
    """Wraps a trigger: no walk over fire times older than `grace_s`, no repeated wall time."""

    def __init__(self, inner: BaseTrigger, *, grace_s: float, once_per_wall_time: bool) -> None:
        self.inner = inner
        self.grace = timedelta(seconds=grace_s)
        self.once_per_wall_time = once_per_wall_time

    def get_next_fire_time(
        self, previous_fire_time: datetime | None, now: datetime
    ) -> datetime | None:
        """The inner trigger's answer, starting over at `now - grace` when far behind."""
        previous = previous_fire_time
        if previous is not None and previous < now - self.grace:
            previous = None  # far behind: the first fire time at or after now - grace
            now = now - self.grace
        nxt: datetime | None = self.inner.get_next_fire_time(previous, now)
        # The autumn hour shows this wall time again: once is enough for fixed hours.
        repeated = previous is not None and nxt is not None and _wall(nxt) == _wall(previous)
        if self.once_per_wall_time and repeated:
            nxt = self.inner.get_next_fire_time(nxt, nxt)
        return nxt

    def __str__(self) -> str:
        return str(self.inner)


def _wall(moment: datetime) -> datetime:
    """The local wall-clock reading of an aware datetime (without offset or fold)."""
    return moment.replace(tzinfo=None, fold=0)


def build_trigger(
    *, cron: str | None, every_s: float | None, zone: tzinfo, grace_s: float, start: Any = None
) -> CatchUp:
    """The trigger of one schedule: `cron` in `zone`, or every `every_s` seconds from `start`."""
    if cron is not None:
        hour = cron.split()[1] if len(cron.split()) == 5 else "*"
        return CatchUp(
            cron_trigger(cron, zone), grace_s=grace_s, once_per_wall_time="*" not in hour
        )
    if every_s is None:
        raise ValueError("a schedule needs cron or every_s")
    inner = IntervalTrigger(seconds=every_s, timezone=zone, start_date=start)
    return CatchUp(inner, grace_s=grace_s, once_per_wall_time=False)
