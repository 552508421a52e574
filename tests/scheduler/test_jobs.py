"""The periodic jobs across wall-clock steps (NTP on a board without an RTC).

APScheduler 3 schedules on the wall clock; these tests step a fake wall clock (and, where the
code under test takes one, a fake monotonic clock) and check that the jobs keep their real-time
pace: a forward step costs one run, never a walk over the missed intervals, and a backward step
does not park the jobs for its length. No libfaketime: the clocks are parameters, and
APScheduler's own `datetime.now()` is pointed at the same fake wall clock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Any

import pytest
from apscheduler.triggers.interval import IntervalTrigger

from agent.scheduler import JobScheduler
from agent.scheduler.clock import JUMP_S, ClockSafeScheduler, MonotonicInterval

DAY_S = 86_400.0


class FakeClock:
    """A settable clock: `now` seconds, moved by the test only."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _aware(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, timezone.utc)


@pytest.fixture
def paused() -> Iterator[Callable[..., ClockSafeScheduler]]:
    """`paused(wall, mono)`: a started but paused scheduler (its thread never processes jobs),
    so a test drives `_follow_wall_clock` itself; shut down after the test."""
    made: list[ClockSafeScheduler] = []

    def make(wall: FakeClock, mono: FakeClock) -> ClockSafeScheduler:
        sched = ClockSafeScheduler(wall=wall, monotonic=mono, timezone="UTC")
        sched.start(paused=True)
        made.append(sched)
        return sched

    yield make
    for sched in made:
        sched.shutdown(wait=False)


def _add(sched: ClockSafeScheduler, job_id: str, trigger: Any, wall: FakeClock) -> Any:
    """Add a job whose first run time is computed from the fake wall clock."""
    first = trigger.get_next_fire_time(None, _aware(wall()))
    return sched.add_job(lambda: None, trigger, id=job_id, next_run_time=first)


# -- the trigger ------------------------------------------------------------------------------


def test_first_run_is_one_interval_after_creation() -> None:
    mono = FakeClock(100.0)
    trigger = MonotonicInterval(2.0, monotonic=mono)
    now = _aware(1_000_000.0)
    assert trigger.get_next_fire_time(None, now) == now + timedelta(seconds=2)
    assert trigger.seconds_left() == pytest.approx(2.0)


def test_forward_step_costs_one_run_time_not_one_per_missed_interval(
    paused: Callable[..., ClockSafeScheduler],
) -> None:
    wall, mono = FakeClock(1_000_000.0), FakeClock(50.0)
    sched = paused(wall, mono)
    ours = _add(sched, "ours", MonotonicInterval(1.0, monotonic=mono), wall)
    stock_trigger = IntervalTrigger(seconds=1, start_date=_aware(wall() + 1.0), timezone="UTC")
    stock = _add(sched, "stock", stock_trigger, wall)
    # One real second passes and, meanwhile, NTP steps the wall clock forward by an hour.
    mono.now += 1.0
    wall.now += 1.0 + 3600.0
    now = _aware(wall())
    # The stock trigger walks every missed interval: the hazard (a month: 2.6 million steps).
    assert len(stock._get_run_times(now)) == 3601
    runs = ours._get_run_times(now)
    assert len(runs) == 1
    # The next run is one real second after this one, on the new wall clock.
    nxt = ours.trigger.get_next_fire_time(runs[-1], now)
    assert nxt == now + timedelta(seconds=1.0)


def test_a_month_forward_is_one_step() -> None:
    mono = FakeClock(0.0)
    trigger = MonotonicInterval(0.01, monotonic=mono)
    start = _aware(1_000_000.0)
    first = trigger.get_next_fire_time(None, start)
    mono.now += 0.01
    now = start + timedelta(days=30, seconds=0.01)
    nxt = trigger.get_next_fire_time(first, now)
    assert now < nxt <= now + timedelta(seconds=0.01)


def test_second_ask_for_the_same_run_does_not_advance_again() -> None:
    mono = FakeClock(0.0)
    trigger = MonotonicInterval(5.0, monotonic=mono)
    now = _aware(1_000_000.0)
    first = trigger.get_next_fire_time(None, now)
    mono.now = 5.0
    now += timedelta(seconds=5)
    # APScheduler asks in `_get_run_times`, then again with the same previous fire time.
    a = trigger.get_next_fire_time(first, now)
    b = trigger.get_next_fire_time(first, now)
    assert a == b == now + timedelta(seconds=5)


def test_missed_deadlines_are_skipped_on_the_real_time_grid() -> None:
    mono = FakeClock(0.0)
    trigger = MonotonicInterval(1.0, monotonic=mono)
    now = _aware(1_000_000.0)
    first = trigger.get_next_fire_time(None, now)  # due at mono 1.0
    mono.now = 10.25  # the process was stopped for ~9 s: deadlines 2..10 are gone
    now += timedelta(seconds=10.25)
    nxt = trigger.get_next_fire_time(first, now)
    assert (nxt - now).total_seconds() == pytest.approx(0.75)  # next grid point: mono 11.0


def test_a_bad_interval_is_refused_with_its_value() -> None:
    for bad in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="interval_s"):
            MonotonicInterval(bad)
    sched = JobScheduler(name="t")
    with pytest.raises(ValueError, match=r"'flush'.*got 0"):
        sched.add("flush", 0, lambda: None)


# -- following the wall clock -----------------------------------------------------------------


@pytest.mark.parametrize("step_s", [-7200.0, 30 * DAY_S], ids=["back-2h", "forward-30d"])
def test_a_step_rederives_next_runs_from_the_monotonic_deadlines(
    paused: Callable[..., ClockSafeScheduler], step_s: float
) -> None:
    wall, mono = FakeClock(1_700_000_000.0), FakeClock(1000.0)
    sched = paused(wall, mono)
    fast = _add(sched, "fast", MonotonicInterval(1.0, monotonic=mono), wall)
    slow = _add(sched, "slow", MonotonicInterval(60.0, monotonic=mono), wall)
    mono.now += 0.4
    wall.now += 0.4 + step_s
    sched._follow_wall_clock()
    assert sched.clock_steps == 1
    # Each job is due after the real seconds it had left, counted on the new wall clock:
    # backwards nobody waits out the two hours, forwards the slow job does not run early.
    for job, left in ((fast, 0.6), (slow, 59.6)):
        nxt = sched.get_job(job.id).next_run_time
        assert nxt.timestamp() == pytest.approx(wall() + left, abs=1e-3)


def test_slow_drift_is_followed_without_a_step(
    paused: Callable[..., ClockSafeScheduler],
) -> None:
    wall, mono = FakeClock(1_700_000_000.0), FakeClock(1000.0)
    sched = paused(wall, mono)
    job = _add(sched, "fast", MonotonicInterval(1.0, monotonic=mono), wall)
    before = sched.get_job(job.id).next_run_time
    for _ in range(10):  # NTP slewing: the offset creeps, each pass well under JUMP_S
        wall.now += JUMP_S / 4
        sched._follow_wall_clock()
    assert sched.clock_steps == 0
    assert sched.get_job(job.id).next_run_time == before


def test_the_scheduler_never_sleeps_longer_than_the_quickest_interval() -> None:
    sched = JobScheduler(name="t")
    sched.add("quick", 0.2, lambda: None)
    sched.add("slow", 600.0, lambda: None)
    sched.start()
    try:
        assert sched._scheduler.watch_s == pytest.approx(0.2)
        ids = {j["id"]: j for j in sched.jobs()}
        assert ids["slow"]["next_run_ts"] == pytest.approx(time.time() + 600.0, abs=5.0)
    finally:
        sched.stop()


# -- the running scheduler, stepped -----------------------------------------------------------


class _SkewedWall:
    """The real wall clock plus a skew the test steps."""

    def __init__(self) -> None:
        self.skew = 0.0

    def __call__(self) -> float:
        return time.time() + self.skew

    def datetime_class(self) -> type[datetime]:
        """A datetime whose `now()` reads this clock (for APScheduler's own reads)."""
        wall = self

        class SkewedDatetime(datetime):
            @classmethod
            def now(cls, tz: tzinfo | None = None) -> SkewedDatetime:
                return cls.fromtimestamp(wall(), tz)

        return SkewedDatetime


def _runs_in(counter: list[int], seconds: float) -> int:
    """Runs counted during `seconds` of real time."""
    start = counter[0]
    threading.Event().wait(seconds)
    return counter[0] - start


def test_running_jobs_keep_their_pace_across_steps_both_ways(
    monkeypatch: pytest.MonkeyPatch, until: Callable[..., bool]
) -> None:
    wall = _SkewedWall()
    monkeypatch.setattr("apscheduler.schedulers.base.datetime", wall.datetime_class())
    fast, slow = [0], [0]
    sched = JobScheduler(name="t", wall=wall)
    sched.add("fast", 0.05, lambda: fast.__setitem__(0, fast[0] + 1))
    sched.add("slow", 30.0, lambda: slow.__setitem__(0, slow[0] + 1))
    sched.start()
    try:
        assert until(lambda: fast[0] >= 3, timeout=10)
        before = _runs_in(fast, 1.0)
        wall.skew -= 7200.0  # stock APScheduler: no run for two hours
        after_back = _runs_in(fast, 1.0)
        wall.skew += 30 * DAY_S  # stock APScheduler: 52 million interval steps first
        after_forward = _runs_in(fast, 1.0)
        print(
            f"\nruns of a 0.05 s job per 1 s window: before {before}, after -2 h {after_back},"
            f" after +30 d {after_forward}; steps noticed {sched.clock_steps}"
        )
        assert before >= 3
        # Ratios within this run: the pace holds (no stall, no catch-up burst).
        for after in (after_back, after_forward):
            assert 0.3 * before <= after <= 2 * before + 3
        assert sched.clock_steps == 2
        # A step landing mid-pass may run the slow job once early (see agent.scheduler.clock).
        assert slow[0] <= 1
        jobs = {j["id"]: j for j in sched.jobs()}
        assert jobs["fast"]["errors"] == 0
        assert jobs["fast"]["last_run_ts"] == pytest.approx(wall(), abs=60.0)
    finally:
        sched.stop()
