"""A small wrapper over APScheduler's BackgroundScheduler: interval jobs, counted and listed.

Each job runs in the scheduler's single worker thread, never on a plugin loop; a job that is
still running when its next run is due is not started twice (`max_instances=1`, `coalesce`).
APScheduler is imported when the scheduler starts, not when this module is imported.
"""

from __future__ import annotations

import logging
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

    def __init__(self, *, name: str = "edge-agent") -> None:
        self.name = name
        self._jobs: dict[str, _Job] = {}
        self._scheduler: Any = None

    def add(self, job_id: str, interval_s: float, fn: Callable[[], None]) -> None:
        """Run `fn` every `interval_s` seconds once started (first run one interval from now)."""
        if job_id in self._jobs:
            raise ValueError(f"job {job_id!r} already added")
        self._jobs[job_id] = _Job(fn, interval_s)
        if self._scheduler is not None:
            self._schedule(job_id)

    def start(self) -> None:
        """Start the scheduler thread."""
        from apscheduler.executors.pool import ThreadPoolExecutor
        from apscheduler.schedulers.background import BackgroundScheduler

        # APScheduler logs every job run at INFO; at a 1 s flush interval that floods the journal.
        logging.getLogger("apscheduler").setLevel(logging.WARNING)
        self._scheduler = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(max_workers=1)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
            timezone="UTC",
            daemon=True,
        )
        for job_id in self._jobs:
            self._schedule(job_id)
        self._scheduler.start()

    def _schedule(self, job_id: str) -> None:
        job = self._jobs[job_id]
        self._scheduler.add_job(
            self._runner(job_id),
            "interval",
            seconds=job.interval_s,
            id=job_id,
            name=f"{self.name}:{job_id}",
        )

    def _runner(self, job_id: str) -> Callable[[], None]:
        job = self._jobs[job_id]

        def run() -> None:
            job.last_run_ts = time.time()
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
