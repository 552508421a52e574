"""The fixed-rate loop: rate, overruns and skips, mailbox, stop, GC in slack.

Timing assertions count ticks against the deadline grid with generous tolerances: the machine
is a noisy 2-core VM shared with other test runs.
"""

from __future__ import annotations

import gc
import threading
import time
import tracemalloc

import pytest

from agent.config.sections import EngineConfig
from agent.engine.loop import Loop, period_ns
from agent.engine.process import RealtimeMode
from tests.support.waiting import until


def _run_for(loop: Loop, seconds: float) -> float:
    """Start, wait, stop; returns the seconds between the first tick's deadline and the stop."""
    loop.start()
    assert loop.started.wait(5.0)
    begin = time.perf_counter()
    threading.Event().wait(seconds)  # the run measured
    end = time.perf_counter()
    loop.stop()
    assert loop.join(5.0)
    return end - begin


def test_tick_rate_is_accurate_over_two_seconds() -> None:
    rate = 200.0
    seen = {"first": 0, "last": 0}

    def tick(now: int) -> None:
        seen["first"] = seen["first"] or now
        seen["last"] = now

    loop = Loop("rate", tick, rate_hz=rate)
    _run_for(loop, 2.0)
    # Measured on the loop's own clock, so a late-waking test thread does not blur it.
    elapsed = (seen["last"] - seen["first"]) / 1e9
    expected = elapsed * rate + 1
    assert elapsed > 1.5
    # Every deadline of the grid is either ticked or counted as skipped...
    assert abs(loop.ticks + loop.skipped - expected) <= 2
    # ...and nearly all of them were ticked.
    assert abs(loop.ticks - expected) <= 0.10 * expected
    assert loop.error is None


def test_overruns_are_counted_and_missed_deadlines_skipped_not_bunched() -> None:
    rate = 100.0
    period = period_ns(rate)
    starts: list[int] = []
    slow_after: list[int] = []

    def tick(now: int) -> None:
        starts.append(now)
        if len(starts) % 10 == 0:  # every 10th tick spins through 2.5 periods
            slow_after.append(len(starts))
            end = now + int(2.5 * period)
            while time.perf_counter_ns() < end:
                pass

    loop = Loop("slow", tick, rate_hz=rate)
    _run_for(loop, 2.0)
    slow = len(slow_after)
    assert slow >= 10
    assert slow <= loop.overruns <= slow + max(5, loop.ticks // 20)
    assert loop.skipped >= 2 * slow
    for i in slow_after:
        if i < len(starts):
            # The tick after a slow one waits for a deadline still ahead: no catch-up burst.
            assert starts[i] - starts[i - 1] >= 2.5 * period


def test_stop_ends_the_thread_even_at_a_low_rate() -> None:
    loop = Loop("low", lambda now: None, rate_hz=0.5)
    loop.start()
    assert loop.started.wait(5.0)
    assert until(lambda: loop.ticks >= 1)  # the first tick is done: now it waits out 2 s
    loop.stop()
    # The loop sleeps in slices of at most 50 ms, so it ends long before its 2 s period is over.
    assert loop.join(1.0)
    assert not any(t.name == "loop-low" for t in threading.enumerate())


def test_a_raising_tick_ends_the_loop_with_the_error_kept() -> None:
    def tick(now: int) -> None:
        raise ValueError("bad tick")

    loop = Loop("raise", tick, rate_hz=100.0)
    loop.start()
    assert loop.join(5.0)
    assert isinstance(loop.error, ValueError)
    assert loop.ticks == 0


def test_mail_runs_on_the_loop_thread_between_ticks() -> None:
    state = {"in_tick": False, "overlap": 0}
    loop_thread: list[int] = []

    def tick(now: int) -> None:
        state["in_tick"] = True
        if not loop_thread:
            loop_thread.append(threading.get_ident())
        time.sleep(0.0005)  # the scenario: a tick that takes time, for mail to land during
        state["in_tick"] = False

    def change() -> int:
        state["overlap"] += state["in_tick"]
        return threading.get_ident()

    loop = Loop("mail", tick, rate_hz=200.0)
    loop.start()
    assert loop.started.wait(5.0)
    try:
        idents = {loop.post(change) for _ in range(50)}
    finally:
        loop.stop()
        loop.join(5.0)
    assert idents == set(loop_thread)
    assert state["overlap"] == 0


def test_mail_errors_go_back_to_the_sender_and_the_loop_runs_on() -> None:
    loop = Loop("mailerr", lambda now: None, rate_hz=200.0)
    loop.start()
    try:
        empty: dict[str, int] = {}
        with pytest.raises(KeyError):
            loop.post(lambda: empty["missing"])
        before = loop.ticks
        assert loop.post(lambda: 42) == 42
        assert until(lambda: loop.ticks > before)
        assert loop.alive
    finally:
        loop.stop()
        loop.join(5.0)


def test_mail_to_a_stopped_loop_runs_on_the_callers_thread() -> None:
    loop = Loop("idle", lambda now: None, rate_hz=100.0)
    assert loop.post(threading.get_ident) == threading.get_ident()


def test_a_mail_that_times_out_is_never_applied_later() -> None:
    release = threading.Event()
    applied: list[bool] = []

    def tick(now: int) -> None:
        release.wait(5.0)  # a stuck tick

    loop = Loop("stuck", tick, rate_hz=100.0)
    loop.start()
    assert loop.started.wait(5.0)
    with pytest.raises(TimeoutError):
        loop.post(lambda: applied.append(True), timeout=0.1)
    stuck_at = loop.ticks
    release.set()
    # Mail runs between ticks: two more ticks and a kept mail would have run by now.
    assert until(lambda: loop.ticks >= stuck_at + 2)
    loop.stop()
    loop.join(5.0)
    assert applied == []


def test_rate_change_applies_from_the_next_deadline() -> None:
    loop = Loop("rerate", lambda now: None, rate_hz=100.0)
    loop.start()
    assert loop.started.wait(5.0)
    try:
        assert until(lambda: loop.ticks >= 20)  # warmed up
        t0, n0 = time.perf_counter(), loop.ticks + loop.skipped
        time.sleep(1.0)  # the measurement window, not a wait for something
        slow_rate = (loop.ticks + loop.skipped - n0) / (time.perf_counter() - t0)
        loop.set_rate(300.0)
        t1, n1 = time.perf_counter(), loop.ticks + loop.skipped
        time.sleep(1.0)  # the measurement window
        fast_rate = (loop.ticks + loop.skipped - n1) / (time.perf_counter() - t1)
    finally:
        loop.stop()
        loop.join(5.0)
    assert fast_rate / slow_rate == pytest.approx(3.0, rel=0.15)
    assert loop.rate_hz == 300.0


def test_gc_runs_in_idle_slack_when_automatic_gc_is_off() -> None:
    def tick(now: int) -> None:
        # Cyclic garbage on purpose (a real tick allocates nothing).
        for _ in range(50):
            a: list[object] = []
            a.append(a)

    with RealtimeMode(EngineConfig(gc_mode="freeze")) as mode:
        assert not gc.isenabled()
        loop = Loop("gc", tick, rate_hz=200.0, collector=mode.collector)
        _run_for(loop, 1.0)
        pending = gc.get_count()[0]
    assert gc.isenabled()
    assert loop.gc_collections >= 5
    # Collections kept up: the young generation never grew far past its threshold.
    assert pending < 20 * gc.get_threshold()[0]


def test_loop_body_does_not_grow_memory() -> None:
    loop = Loop("alloc", lambda now: None, rate_hz=1000.0)
    loop.start()
    assert loop.started.wait(5.0)
    assert until(lambda: loop.ticks >= 200)  # warmed up
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        ticks = loop.ticks
        time.sleep(1.0)  # the window the snapshots compare
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
        loop.stop()
        loop.join(5.0)
    assert loop.ticks - ticks > 200
    mine = [
        s for s in after.compare_to(before, "filename") if "agent/engine" in s.traceback[0].filename
    ]
    assert sum(s.size_diff for s in mine) < 2048, mine


def test_affinity_is_applied_or_warned_about_once() -> None:
    loop = Loop("pinned", lambda now: None, rate_hz=100.0, cpu_affinity=[0], realtime_priority=5)
    _run_for(loop, 0.1)
    # CPU 0 always exists; SCHED_FIFO needs CAP_SYS_NICE: either applied, or one clear warning.
    assert all("cpu_affinity" not in w for w in loop.warnings)
    assert len([w for w in loop.warnings if "realtime_priority" in w]) <= 1
