"""A small wrapper over APScheduler's BackgroundScheduler: interval jobs, counted and listed.

Each job runs in the scheduler's single worker thread, never on a plugin loop; a job that is
still running when its next run is due is not started twice (`max_instances=1`, `coalesce`).
Intervals are real seconds: a step of the wall clock (NTP on a board without an RTC) neither
stops the jobs nor makes them catch up (see `agent.scheduler.clock`). APScheduler is imported
when the scheduler starts, not when this module is imported.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Job:
    fn: Callable[[], None]
    interval_s: float
    runs: int = 0
    errors: int = 0
    last_run_ts: float = 0.0
    last_error: str = ""


class JobScheduler:
    """Interval jobs by id; `jobs()` describes them for `status`."""

    def __init__(
        self,
        *,
        name: str = "edge-agent",
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self._jobs: dict[str, _Job] = {}
        self._scheduler: Any = None
        # The clocks are parameters so that tests can step a fake wall clock.
        self._wall = wall
        self._monotonic = monotonic

    def add(self, job_id: str, interval_s: float, fn: Callable[[], None]) -> None:
        """Run `fn` every `interval_s` seconds once started (first run one interval from now)."""
        if job_id in self._jobs:
            raise ValueError(f"job {job_id!r} already added")
        if not (interval_s > 0 and math.isfinite(interval_s)):
            raise ValueError(f"job {job_id!r}: interval_s must be > 0 (got {interval_s!r})")
        self._jobs[job_id] = _Job(fn, interval_s)
        if self._scheduler is not None:
            self._schedule(job_id)

    def start(self) -> None:
        """Start the scheduler thread."""
        from apscheduler.executors.pool import ThreadPoolExecutor

        from agent.scheduler.clock import ClockSafeScheduler

        # APScheduler logs every job run at INFO; at a 1 s flush interval that floods the journal.
        logging.getLogger("apscheduler").setLevel(logging.WARNING)
        self._scheduler = ClockSafeScheduler(
            wall=self._wall,
            monotonic=self._monotonic,
            executors={"default": ThreadPoolExecutor(max_workers=1)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
            timezone="UTC",
            daemon=True,
        )
        for job_id in self._jobs:
            self._schedule(job_id)
        self._scheduler.start()

    def _schedule(self, job_id: str) -> None:
        from agent.scheduler.clock import MonotonicInterval

        job = self._jobs[job_id]
        # The scheduler sleeps at most one interval of its quickest job: a backward clock step
        # is then noticed within about that interval.
        self._scheduler.watch_s = min(self._scheduler.watch_s, job.interval_s)
        self._scheduler.add_job(
            self._runner(job_id),
            MonotonicInterval(job.interval_s, monotonic=self._monotonic),
            id=job_id,
            name=f"{self.name}:{job_id}",
        )

    def _runner(self, job_id: str) -> Callable[[], None]:
        job = self._jobs[job_id]

        def run() -> None:
            job.last_run_ts = self._wall()
            job.runs += 1
            try:
                job.fn()
            except Exception as exc:
                job.errors += 1
                job.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("job %s failed", job_id)

        return run

    def run_now(self, job_id: str) -> None:
        """Run a job once now, on the calling thread."""
        self._runner(job_id)()

    @property
    def clock_steps(self) -> int:
        """Wall-clock steps the running scheduler noticed (and re-derived its jobs after)."""
        return int(self._scheduler.clock_steps) if self._scheduler is not None else 0

    def stop(self) -> None:
        """Stop the scheduler; a job running now finishes on its own."""
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
            self._scheduler = None

    def jobs(self) -> list[dict[str, Any]]:
        """Every job: id, interval, runs, errors, last run and error, next run (Unix seconds)."""
        out = []
        for job_id, job in self._jobs.items():
            nxt = None
            if self._scheduler is not None:
                aps_job = self._scheduler.get_job(job_id)
                if aps_job is not None and aps_job.next_run_time is not None:
                    nxt = round(aps_job.next_run_time.timestamp(), 3)
            out.append(
                {
                    "id": job_id,
                    "interval_s": job.interval_s,
                    "runs": job.runs,
                    "errors": job.errors,
                    "last_run_ts": round(job.last_run_ts, 3) if job.runs else None,
                    "next_run_ts": nxt,
                    "last_error": job.last_error or None,
                }
            )
        return out
