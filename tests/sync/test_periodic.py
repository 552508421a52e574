"""The sync service's periodic work: monotonic deadlines, indifferent to wall-clock steps.

Both clocks are parameters of `Periodic`, so the tests move them by hand: no sleeping, no
libfaketime (the soak suite runs the whole agent under libfaketime).
"""

from __future__ import annotations

import math

import pytest

from agent.sync.periodic import Periodic


class Clock:
    """A clock the test moves."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make(interval_s: float = 1.0) -> tuple[Periodic, Clock, Clock, list[str]]:
    mono, wall = Clock(100.0), Clock(1_700_000_000.0)
    periodic = Periodic(monotonic=mono, wall=wall)
    ran: list[str] = []
    periodic.add("tick", interval_s, lambda: ran.append("tick"))
    return periodic, mono, wall, ran


def test_a_job_runs_once_per_interval_the_first_time_one_interval_after_start() -> None:
    periodic, mono, _, ran = make()
    periodic.restart()
    mono.now += 0.999
    assert periodic.run_due() == 0 and ran == []
    mono.now += 0.001
    assert periodic.run_due() == 1 and ran == ["tick"]
    assert periodic.run_due() == 0  # not twice for one deadline


def test_missed_deadlines_are_skipped_not_bunched_and_the_grid_is_kept() -> None:
    periodic, mono, _, ran = make()
    periodic.restart()
    mono.now += 10.5  # ten deadlines passed while the thread was busy
    periodic.run_due()
    assert ran == ["tick"]
    mono.now += 0.49
    periodic.run_due()
    assert ran == ["tick"]
    mono.now += 0.01  # 11 intervals after start: the next point of the grid
    periodic.run_due()
    assert ran == ["tick", "tick"]


@pytest.mark.parametrize("step_s", [30 * 86400.0, -7200.0])
def test_a_wall_clock_step_neither_stops_the_jobs_nor_makes_them_catch_up(step_s: float) -> None:
    periodic, mono, wall, ran = make()
    periodic.restart()
    wall.now += step_s
    assert periodic.run_due() == 0
    for _ in range(3):
        mono.now += 1.0
        wall.now += 1.0
        periodic.run_due()
    assert ran == ["tick"] * 3
    assert periodic.clock_steps == 1
    (job,) = periodic.jobs()
    assert job["runs"] == 3 and job["last_run_ts"] == pytest.approx(wall.now)
    assert job["next_run_ts"] == pytest.approx(wall.now + 1.0)  # as the wall clock reads now


def test_a_failing_job_is_counted_and_the_others_still_run() -> None:
    periodic, mono, _, ran = make()

    def broken() -> None:
        raise RuntimeError("disk on fire")

    periodic.add("broken", 1.0, broken)
    periodic.restart()
    mono.now += 1.0
    assert periodic.run_due() == 2
    jobs = {j["id"]: j for j in periodic.jobs()}
    assert jobs["broken"]["errors"] == 1
    assert jobs["broken"]["last_error"] == "RuntimeError: disk on fire"
    assert jobs["tick"]["errors"] == 0 and ran == ["tick"]


@pytest.mark.parametrize("bad", [0.0, -1.0, math.inf, math.nan])
def test_an_interval_that_is_not_a_finite_positive_number_is_refused(bad: float) -> None:
    periodic, _, _, _ = make()
    with pytest.raises(ValueError, match="job 'other': interval_s must be a finite number > 0"):
        periodic.add("other", bad, lambda: None)


def test_a_job_name_is_added_once() -> None:
    periodic, _, _, _ = make()
    with pytest.raises(ValueError, match="job 'tick' already added"):
        periodic.add("tick", 2.0, lambda: None)
