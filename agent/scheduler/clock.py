"""APScheduler 3 on the monotonic clock: interval jobs that keep their pace across wall-clock steps.

Why: APScheduler 3 keeps each job's next run as a wall-clock datetime and compares it with
`datetime.now()`. Boards without an RTC boot with a stale clock that NTP later steps forward by
days or months, and a misconfigured NTP can step it back. Measured with the stock "interval"
trigger under libfaketime (a 0.5 s job): a +30 day step made `Job._get_run_times` walk 5.2 million
missed intervals, 6.3 s of scheduler-thread CPU with no job run meanwhile (a step of years at 1 s
takes minutes); a -2 h step stopped every job for two hours.

The fix keeps APScheduler (the project's choice) and adds two small parts:

- `MonotonicInterval`, a trigger that keeps a job's deadlines on `time.monotonic()` and answers
  APScheduler with "wall now + real seconds left". Its answer is always later than the `now`
  APScheduler passes, so a forward step costs one run, never a walk over the missed intervals.
  Deadlines missed for real (a slow job, a stopped process) are skipped by arithmetic.
- `ClockSafeScheduler`, a BackgroundScheduler that, before each pass over the jobs, compares the
  wall-minus-monotonic offset with the previous pass; when it moved by more than `JUMP_S` it
  re-derives every job's wall-clock next run from its monotonic deadline, so after a forward step
  no job runs early and after a backward step none waits out the step. It never sleeps longer
  than `watch_s` (1 s, or the shortest interval if shorter), which bounds how late a backward
  step is noticed to about one interval. A step landing in the microseconds between that check
  and APScheduler's own clock read is caught on the next pass: at worst a job runs once early
  (forward) or one watch period late (backward).

Considered and not taken: a separate watch thread (one more thread, and it races the scheduler's
own wake-up: a forward step could run every job once early before the watch re-derives them);
faking APScheduler's clock (it reads `datetime.now()` inside `_process_jobs`, with no hook).
`_process_jobs` is the one step the main loop of every APScheduler 3 scheduler calls; it is
wrapped here, not copied (apscheduler>=3.11,<4 is pinned; tests/scheduler exercises the wrapper).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import STATE_PAUSED
from apscheduler.triggers.base import BaseTrigger

log = logging.getLogger(__name__)

JUMP_S = 0.5
"""A change of the wall-minus-monotonic offset larger than this between two passes is a step.

NTP slewing moves the offset by at most 0.5 ms/s, far below; a step smaller than this shifts a
job by at most this much, once."""
WATCH_S = 1.0
"""Longest sleep of the scheduler thread: how late a backward step is noticed, at worst."""
_MIN_LEFT_S = 1e-6
"""Smallest lead of a fire time over `now`: keeps it strictly later (datetimes have 1 us)."""

Clock = Callable[[], float]


class MonotonicInterval(BaseTrigger):  # type: ignore[misc]  # APScheduler ships no types
    """Fire every `interval_s` real seconds, the first one interval after creation."""

    def __init__(self, interval_s: float, *, monotonic: Clock = time.monotonic) -> None:
        if not (interval_s > 0 and math.isfinite(interval_s)):
            raise ValueError(f"interval_s must be a finite number > 0 (got {interval_s!r})")
        self.interval_s = float(interval_s)
        self._monotonic = monotonic
        self._due = monotonic() + self.interval_s
        self._fired: datetime | None = None  # the previous fire time the deadline advanced for

    def seconds_left(self) -> float:
        """Real seconds until the next run (0.0 when it is due)."""
        return max(0.0, self._due - self._monotonic())

    def get_next_fire_time(self, previous_fire_time: datetime | None, now: datetime) -> datetime:
        """`now` plus the real seconds left to the deadline after `previous_fire_time`."""
        mono = self._monotonic()
        # APScheduler asks once per run (in `_get_run_times`) and once more with the same
        # previous fire time (to store the next one): only the first ask advances the deadline.
        if previous_fire_time is not None and previous_fire_time != self._fired:
            self._fired = previous_fire_time
            self._due += self.interval_s
            if self._due <= mono:  # fell behind: skip the missed deadlines (the job coalesces)
                missed = math.floor((mono - self._due) / self.interval_s) + 1
                self._due += missed * self.interval_s
        return now + timedelta(seconds=max(self._due - mono, _MIN_LEFT_S))

    def __str__(self) -> str:
        return f"monotonic-interval[{self.interval_s:g} s]"


class ClockSafeScheduler(BackgroundScheduler):  # type: ignore[misc]  # APScheduler: no types
    """A BackgroundScheduler whose `MonotonicInterval` jobs follow wall-clock steps."""

    def __init__(
        self,
        *,
        watch_s: float = WATCH_S,
        wall: Clock = time.time,
        monotonic: Clock = time.monotonic,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        self.watch_s = watch_s
        """Longest sleep between passes; `JobScheduler` lowers it to the shortest interval."""
        self.clock_steps = 0
        """Wall-clock steps noticed since creation."""
        self._wall = wall
        self._monotonic = monotonic
        self._offset = wall() - monotonic()

    def _process_jobs(self) -> float | None:
        if self.state == STATE_PAUSED:  # paused: wait for resume(), as APScheduler does
            return super()._process_jobs()  # type: ignore[no-any-return]
        self._follow_wall_clock()
        wait: float | None = super()._process_jobs()
        # Never sleep past the watch period: a backward step would otherwise park every job.
        return self.watch_s if wait is None else min(wait, self.watch_s)

    def _follow_wall_clock(self) -> None:
        offset = self._wall() - self._monotonic()
        step = offset - self._offset
        self._offset = offset  # slow drift (NTP slewing) is followed, never reported as a step
        if abs(step) <= JUMP_S:
            return
        self.clock_steps += 1
        log.warning("wall clock stepped %+.1f s; periodic jobs keep their real-time pace", step)
        now = self._wall()
        for job in self.get_jobs():
            trigger = job.trigger
            if isinstance(trigger, MonotonicInterval) and job.next_run_time is not None:
                nxt = datetime.fromtimestamp(now + trigger.seconds_left(), self.timezone)
                self.modify_job(job.id, next_run_time=nxt)
