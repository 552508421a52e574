"""The sync service's own periodic work as monotonic deadlines, checked on the sync thread.

The sync thread wakes every few milliseconds anyway, so an interval job is one float compared
with `time.monotonic()`: no scheduler thread, no hand-off to the sync thread (the jobs touch the
channels and the outbox, which only the sync thread uses), and nothing a wall-clock step can
move (NTP stepping a board without an RTC neither stops the jobs nor makes them catch up).
Deadlines missed for real (a slow step, a stopped process) are skipped, not bunched.
APScheduler stays for what it is made for: the schedules users write (`agent.scheduler`).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

Clock = Callable[[], float]

STEP_S = 0.5
"""A change of the wall-minus-monotonic offset larger than this between two checks is a step
(NTP slewing moves it by at most 0.5 ms/s): logged, counted, and otherwise ignored."""


@dataclass(slots=True)
class _Job:
    name: str
    fn: Callable[[], None]
    interval_s: float
    due: float
    runs: int = 0
    errors: int = 0
    last_run_ts: float = 0.0
    last_error: str = ""


class Periodic:
    """Interval jobs by name, run by `run_due()` from the one thread that owns their state."""

    def __init__(self, *, monotonic: Clock = time.monotonic, wall: Clock = time.time) -> None:
        self._jobs: dict[str, _Job] = {}
        # Parameters so that tests can move the clocks.
        self._monotonic = monotonic
        self._wall = wall
        self._offset = wall() - monotonic()
        self.clock_steps = 0
        """Wall-clock steps seen (they move no deadline; timestamps follow the new time)."""

    def add(self, name: str, interval_s: float, fn: Callable[[], None]) -> None:
        """Run `fn` every `interval_s` real seconds, the first time one interval from now."""
        if name in self._jobs:
            raise ValueError(f"job {name!r} already added")
        if not (interval_s > 0 and math.isfinite(interval_s)):
            raise ValueError(
                f"job {name!r}: interval_s must be a finite number > 0 (got {interval_s!r})"
            )
        self._jobs[name] = _Job(name, fn, interval_s, self._monotonic() + interval_s)

    def restart(self) -> None:
        """Put every deadline one interval from now (at start: no job runs at once)."""
        now = self._monotonic()
        for job in self._jobs.values():
            job.due = now + job.interval_s

    def run_due(self) -> int:
        """Run the jobs whose deadline has passed; how many ran. A failing job is counted."""
        self._watch_wall_clock()
        ran = 0
        for job in self._jobs.values():
            now = self._monotonic()
            if now < job.due:
                continue
            # Next deadline on the job's own grid; any missed ones are skipped, not run late.
            missed = math.floor((now - job.due) / job.interval_s)
            job.due += (missed + 1) * job.interval_s
            self._run(job)
            ran += 1
        return ran

    def _watch_wall_clock(self) -> None:
        offset = self._wall() - self._monotonic()
        step = offset - self._offset
        self._offset = offset  # slow drift is followed, never reported
        if abs(step) > STEP_S:
            self.clock_steps += 1
            log.warning("wall clock stepped %+.1f s; periodic jobs keep their real-time pace", step)

    def _run(self, job: _Job) -> None:
        job.last_run_ts = self._wall()
        job.runs += 1
        try:
            job.fn()
        except Exception as exc:
            job.errors += 1
            job.last_error = f"{type(exc).__name__}: {exc}"
            log.exception("job %s failed", job.name)

    def jobs(self) -> list[dict[str, Any]]:
        """Every job: id, interval, runs, errors, last run and error, next run (Unix seconds)."""
        offset = self._wall() - self._monotonic()  # the next run as the wall clock reads now
        return [
            {
                "id": job.name,
                "interval_s": job.interval_s,
                "runs": job.runs,
                "errors": job.errors,
                "last_run_ts": round(job.last_run_ts, 3) if job.runs else None,
                "next_run_ts": round(job.due + offset, 3),
                "last_error": job.last_error or None,
            }
            for job in self._jobs.values()
        ]
