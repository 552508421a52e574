"""The user's schedules on APScheduler 3: each run is one command, exactly as a remote one.

A run builds the request `{"id": "schedule:<name>:<n>", "args": ...}` and submits it to the
agent's command worker (`SyncService.submit_command`), the one that runs MQTT commands, so the
allow-list, the argument models, the error replies and the one-at-a-time order are the ones
remote commands get. Every run is logged and reported as a
`schedule_run` event (name, command, run, ok, error code, duration, and the result when small)
on the output channel `schedule`, which the sync thread drains like a plugin's.

Runs happen one at a time on the scheduler's single worker thread (never on a plugin loop), so
the channel keeps its one producer; a schedule still running when it is due again is not
started twice (`max_instances=1`), and runs piled up by a late wake-up run once (`coalesce`).

Wall-clock steps (NTP on a board without an RTC): APScheduler sleeps in real seconds towards a
wall-clock fire time, so on its own it notices a forward step only at its next wake-up, hours
later for a daily schedule. A small watch thread compares the wall-minus-monotonic offset every
`WATCH_S` and, when it moved by more than `JUMP_S`, wakes the scheduler (public `wakeup()`);
after a backward step it also moves every `every_s` schedule back by the step, so intervals keep
their real-time pace instead of pausing for the length of the step. What that gives, per kind,
is written out in docs/schedules.md and tested in tests/scheduler and tests/soak.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from agent.config.sections import ScheduleConfig
from agent.plugin.channel import OutputChannel
from agent.scheduler.check import request_payload

log = logging.getLogger(__name__)

CHANNEL = "schedule"
"""Name of the output channel (and of the events' `plugin` field and topic level)."""
EVENT_KIND = "schedule_run"
WATCH_S = 1.0
"""How often the watch thread looks for a wall-clock step."""
JUMP_S = 2.0
"""A move of the wall-minus-monotonic offset larger than this is a step (NTP slews far less)."""
RESULT_MAX_BYTES = 4096
"""A command result up to this size (as JSON) rides in the event; a larger one is left out."""


RUN_TIMEOUT_S = 60.0
"""How long a run waits for its command's reply before it is reported as `timeout`."""

Reply = Callable[[dict[str, Any]], None]
Submit = Callable[[str, bytes, Reply], bool]
"""Queue a command on the command worker; `reply` gets its reply; False when the queue is full."""


@dataclass(slots=True)
class _Counts:
    runs: int = 0
    failed: int = 0
    missed: int = 0
    last_run_ts: float | None = None
    last_error: str | None = None


class Schedules:
    """The config's `[[schedule]]` entries, run by a BackgroundScheduler once started."""

    def __init__(
        self,
        schedules: Sequence[ScheduleConfig],
        submit: Submit,
        *,
        channel: OutputChannel | None = None,
        default_zone: tzinfo | None = None,
    ) -> None:
        self._schedules = {s.name: s for s in schedules}
        self._submit = submit
        self.channel = channel
        """Where `schedule_run` events go; None: runs are only logged (no MQTT)."""
        self._default_zone = default_zone
        self._counts = {name: _Counts() for name in self._schedules}
        self._scheduler: Any = None
        self._stop = threading.Event()
        self._watch: threading.Thread | None = None
        self.clock_steps = 0
        """Wall-clock steps the watch thread noticed."""

    def start(self) -> None:
        """Start the scheduler thread and the clock watch (nothing when there are no schedules)."""
        if not self._schedules or self._scheduler is not None:
            return
        from apscheduler.events import EVENT_JOB_MISSED
        from apscheduler.executors.pool import ThreadPoolExecutor
        from apscheduler.schedulers.background import BackgroundScheduler

        # APScheduler logs every run at INFO; each run is logged here once, in our words.
        logging.getLogger("apscheduler").setLevel(logging.WARNING)
        scheduler = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(max_workers=1)},  # one channel producer
            job_defaults={"coalesce": True, "max_instances": 1},
            timezone=ZoneInfo("UTC"),
            daemon=True,
        )
        scheduler.add_listener(self._missed, EVENT_JOB_MISSED)
        for sched in self._schedules.values():
            self._add(scheduler, sched)
        scheduler.start()
        self._scheduler = scheduler
        self._stop.clear()
        self._watch = threading.Thread(target=self._watch_clock, name="schedule-clock", daemon=True)
        self._watch.start()
        for job in self.jobs():
            log.info("schedule %s: %s, next run %s", job["name"], job["when"], job["next_run"])

    def _add(self, scheduler: Any, sched: ScheduleConfig) -> None:
        from agent.scheduler.triggers import build_trigger

        zone = self.zone(sched)
        # An interval's latest skipped run always lies within one interval: always run it.
        grace = (
            sched.misfire_grace_s if sched.cron else max(sched.misfire_grace_s, sched.every_s or 0)
        )
        trigger = build_trigger(cron=sched.cron, every_s=sched.every_s, zone=zone, grace_s=grace)
        scheduler.add_job(
            self._run,
            trigger,
            args=(sched.name,),
            id=sched.name,
            name=f"schedule:{sched.name}",
            misfire_grace_time=int(grace) or 1,
        )

    def zone(self, sched: ScheduleConfig) -> tzinfo:
        """The time zone of a schedule: its own, else the default (the system's zone)."""
        if sched.timezone is not None:
            return ZoneInfo(sched.timezone)
        if self._default_zone is None:
            from tzlocal import get_localzone

            self._default_zone = get_localzone()
        return self._default_zone

    def stop(self, timeout: float = 1.0) -> None:
        """Stop the scheduler and the watch; a run in progress finishes on its own."""
        self._stop.set()
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
            self._scheduler = None
        if self._watch is not None:
            self._watch.join(timeout)
            self._watch = None

    def jobs(self) -> list[dict[str, Any]]:
        """Every schedule: name, when, command, runs, failed, missed, last run, next run."""
        out = []
        for name, sched in self._schedules.items():
            counts = self._counts[name]
            job = self._scheduler.get_job(name) if self._scheduler is not None else None
            nxt = job.next_run_time if job is not None else None
            out.append(
                {
                    "name": name,
                    "when": f"cron {sched.cron!r}" if sched.cron else f"every {sched.every_s:g} s",
                    "timezone": str(self.zone(sched)),
                    "command": sched.command,
                    "runs": counts.runs,
                    "failed": counts.failed,
                    "missed": counts.missed,
                    "last_run_ts": counts.last_run_ts,
                    "last_error": counts.last_error,
                    "next_run": nxt.isoformat() if nxt is not None else None,
                }
            )
        return out

    # -- runs (on the scheduler's single worker thread) -----------------------------------------

    def _run(self, name: str) -> None:
        sched = self._schedules[name]
        counts = self._counts[name]
        counts.runs += 1
        counts.last_run_ts = round(time.time(), 3)
        payload = request_payload(name, counts.runs, sched.args)
        started = time.monotonic()
        reply = self._command(sched.command, payload)
        ms = round((time.monotonic() - started) * 1000.0, 1)
        ok = bool(reply.get("ok"))
        error = reply.get("error") or {}
        data: dict[str, Any] = {
            "name": name,
            "command": sched.command,
            "run": counts.runs,
            "ok": ok,
            "error": error.get("code"),
            "duration_ms": ms,
        }
        if ok:
            log.info("schedule %s: %s ran (run %d, %.1f ms)", name, sched.command, counts.runs, ms)
            result = json.dumps(reply.get("result"), default=str)
            if len(result) <= RESULT_MAX_BYTES:
                data["result"] = reply.get("result")
        else:
            counts.failed += 1
            counts.last_error = f"{error.get('code')}: {error.get('message')}"
            data["message"] = error.get("message")
            log.warning("schedule %s: %s failed: %s", name, sched.command, counts.last_error)
        if self.channel is not None:
            self.channel.event(time.perf_counter_ns(), EVENT_KIND, 1.0 if ok else 0.0, **data)

    def _command(self, name: str, payload: bytes) -> dict[str, Any]:
        """Run one command on the command worker and wait for its reply (this thread runs one
        schedule at a time, so waiting here is what keeps the runs in order)."""
        done = threading.Event()
        box: list[dict[str, Any]] = []

        def reply(answer: dict[str, Any]) -> None:
            box.append(answer)
            done.set()

        if not self._submit(name, payload, reply):
            message = "the command queue is full; the run is skipped"
            return {"id": None, "ok": False, "error": {"code": "busy", "message": message}}
        if not done.wait(RUN_TIMEOUT_S):
            message = f"no reply within {RUN_TIMEOUT_S:g} s"
            return {"id": None, "ok": False, "error": {"code": "timeout", "message": message}}
        return box[0]

    def _missed(self, event: Any) -> None:
        counts = self._counts.get(event.job_id)
        if counts is not None:
            counts.missed += 1
        log.warning(
            "schedule %s: run due at %s missed (later than its misfire grace)",
            event.job_id,
            event.scheduled_run_time.isoformat(),
        )

    # -- the clock watch ------------------------------------------------------------------------

    def _watch_clock(self) -> None:
        offset = time.time() - time.monotonic()
        while not self._stop.wait(WATCH_S):
            now_offset = time.time() - time.monotonic()
            step, offset = now_offset - offset, now_offset
            if abs(step) > JUMP_S and self._scheduler is not None:
                self._follow_step(step)

    def _follow_step(self, step: float) -> None:
        self.clock_steps += 1
        log.warning("wall clock stepped %+.1f s; schedules follow the new time", step)
        scheduler = self._scheduler
        if step < 0:  # intervals keep their real-time pace: move their next run back too
            for name, sched in self._schedules.items():
                job = scheduler.get_job(name)
                if sched.every_s is not None and job is not None and job.next_run_time:
                    job.modify(next_run_time=job.next_run_time + timedelta(seconds=step))
        scheduler.wakeup()
