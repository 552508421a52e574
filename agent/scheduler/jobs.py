"""PROVISIONAL (branch `sched`): the sync service's internal interval jobs on monotonic deadlines.

The `sync` branch moves these jobs onto the sync thread and drops its use of this class; the
lead deletes this module at merge. Until then it keeps the agent whole without APScheduler's
private `_process_jobs` override: one thread, deadlines on `time.monotonic()`, so a wall-clock
step neither stops the jobs nor makes them catch up; missed deadlines are skipped.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Job:
    fn: Callable[[], None]
    interval_s: float
    due: float = 0.0
    runs: int = 0
    errors: int = 0
    last_run_ts: float = 0.0
    last_error: str = ""


class JobScheduler:
    """Interval jobs by id, run one at a time on one thread; `jobs()` describes them."""

    def __init__(self, *, name: str = "edge-agent") -> None:
        self.name = name
        self._jobs: dict[str, _Job] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, job_id: str, interval_s: float, fn: Callable[[], None]) -> None:
        """Run `fn` every `interval_s` seconds once started (first run one interval from start)."""
        if job_id in self._jobs:
            raise ValueError(f"job {job_id!r} already added")
        if not (interval_s > 0 and math.isfinite(interval_s)):
            raise ValueError(f"job {job_id!r}: interval_s must be > 0 (got {interval_s!r})")
        self._jobs[job_id] = _Job(fn, interval_s, due=time.monotonic() + interval_s)

    def start(self) -> None:
        """Start the job thread."""
        now = time.monotonic()
        for job in self._jobs.values():
            job.due = now + job.interval_s
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name=f"{self.name}-jobs", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while True:
            now = time.monotonic()
            wait = min((j.due - now for j in self._jobs.values()), default=1.0)
            if self._stop.wait(max(0.0, wait)):
                return
            now = time.monotonic()
            for job_id, job in self._jobs.items():
                if job.due <= now:
                    missed = math.floor((now - job.due) / job.interval_s)
                    job.due += (missed + 1) * job.interval_s
                    self._run(job_id, job)

    def _run(self, job_id: str, job: _Job) -> None:
        job.last_run_ts = time.time()
        job.runs += 1
        try:
            job.fn()
        except Exception as exc:
            job.errors += 1
            job.last_error = f"{type(exc).__name__}: {exc}"
            log.exception("job %s failed", job_id)

    def stop(self) -> None:
        """Stop the thread; a job running now finishes on its own."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(1.0)
            self._thread = None

    def jobs(self) -> list[dict[str, Any]]:
        """Every job: id, interval, runs, errors, last run and error, next run (Unix seconds)."""
        offset = time.time() - time.monotonic()
        return [
            {
                "id": job_id,
                "interval_s": job.interval_s,
                "runs": job.runs,
                "errors": job.errors,
                "last_run_ts": round(job.last_run_ts, 3) if job.runs else None,
                "next_run_ts": round(job.due + offset, 3) if self._thread else None,
                "last_error": job.last_error or None,
            }
            for job_id, job in self._jobs.items()
        ]
