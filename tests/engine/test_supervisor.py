"""Supervision: restart with exponential backoff, overrun reports and rate reduction, while the
other loops keep their rates."""

from __future__ import annotations

import itertools
import logging
import re
import time

import pytest

from agent.engine.host import PluginHost
from agent.engine.supervisor import Backoff, OverrunWatch
from agent.plugin.base import PluginContext
from tests.support import engine as kit
from tests.support.waiting import until


def test_backoff_doubles_up_to_the_maximum_and_resets_after_a_stable_run() -> None:
    backoff = Backoff(0.5, 3.0, stable_s=10.0)
    assert [backoff.next_delay() for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    backoff.running_since(100.0, 105.0)  # not stable yet
    assert backoff.next_delay() == 3.0
    backoff.running_since(100.0, 110.0)
    assert backoff.next_delay() == 0.5


def test_overrun_watch_judges_whole_windows() -> None:
    watch = OverrunWatch(0.01, window_s=1.0)
    assert watch.update(0.0, 0, 0) is None
    assert watch.update(0.5, 50, 5) is None  # window not over
    assert watch.update(1.0, 100, 5) is True  # 5 % > 1 %
    assert watch.update(2.0, 200, 5) is False
    assert watch.update(3.0, 205, 5) is None  # too few ticks to judge


def test_a_crashing_plugin_restarts_with_backoff_while_another_keeps_its_rate(
    hosts: list[PluginHost], caplog: pytest.LogCaptureFixture
) -> None:
    kit.CrashyPlugin.setups = kit.CrashyPlugin.crashed = kit.CrashyPlugin.teardowns = 0
    setups: list[float] = []
    original_setup = kit.CrashyPlugin.setup

    def timed_setup(self: kit.CrashyPlugin, ctx: PluginContext) -> None:
        setups.append(time.monotonic())
        original_setup(self, ctx)

    config = kit.make_config(
        [
            {"name": "crashy", "rate_hz": 200, "params": {"crash_at": 3, "crashes": 5}},
            {"name": "counter", "rate_hz": 200},
        ],
        engine={"restart_backoff_s": 0.1, "restart_backoff_max_s": 0.4},
    )
    kit.CrashyPlugin.setup = timed_setup  # type: ignore[method-assign]
    caplog.set_level(logging.ERROR, logger="agent.engine.runner")
    try:
        host = kit.make_host(config)
        hosts.append(host)
        host.start()
        before = host.stats()["counter"]
        t0 = time.perf_counter()
        saw_backoff = until(lambda: host.plugins()[0]["state"] == "backoff")
        assert until(lambda: kit.CrashyPlugin.crashed == 5 and len(setups) == 6)
        assert until(lambda: host.plugins()[0]["state"] == "running")
        after = host.stats()["counter"]
        elapsed = time.perf_counter() - t0
    finally:
        kit.CrashyPlugin.setup = original_setup  # type: ignore[method-assign]
    crashy = host.plugins()[0]
    assert saw_backoff
    assert crashy["restarts"] == 5
    assert kit.CrashyPlugin.teardowns == 5  # every crashed instance was torn down
    delays = [
        float(m.group(1))
        for r in caplog.records
        if (m := re.search(r"restarting in ([0-9.]+) s", r.getMessage()))
    ]
    assert delays == [0.1, 0.2, 0.4, 0.4, 0.4]  # doubling, then capped
    gaps = [b - a for a, b in itertools.pairwise(setups)]
    assert all(g >= d for g, d in zip(gaps, delays, strict=True))  # never restarted early
    # The other plugin kept its deadline grid through all of it.
    counter = host.plugins()[1]
    assert counter["restarts"] == 0 and counter["state"] == "running"
    deadlines = (after["ticks"] + after["skipped"]) - (before["ticks"] + before["skipped"])
    assert deadlines == pytest.approx(200 * elapsed, rel=0.05)
    assert after["ticks"] - before["ticks"] >= 0.8 * 200 * elapsed


def test_a_chronic_overrunner_is_reported_and_slowed_others_keep_their_rate(
    hosts: list[PluginHost],
) -> None:
    config = kit.make_config(
        [
            {"name": "slow", "rate_hz": 100, "params": {"every": 2, "periods": 1.5}},
            {"name": "counter", "rate_hz": 200},
        ],
        # 50 % of the slow plugin's ticks overrun; a loaded machine adds a few % to any loop.
        engine={"overrun_reduce_rate": True, "overrun_report_ratio": 0.3},
    )
    host = kit.make_host(config, overrun_window_s=0.3)
    hosts.append(host)
    host.start()
    assert until(lambda: host.plugins()[0]["rate_reductions"] >= 1)
    slow, counter = host.plugins()
    assert slow["overrunning"] is True
    assert slow["rate_hz"] <= 50.0 and slow["configured_rate_hz"] == 100.0
    assert counter["rate_hz"] == 200.0 and counter["rate_reductions"] == 0
    before, t0 = host.stats()["counter"], time.perf_counter()
    time.sleep(1.0)  # the measurement window
    after, elapsed = host.stats()["counter"], time.perf_counter() - t0
    deadlines = (after["ticks"] + after["skipped"]) - (before["ticks"] + before["skipped"])
    assert deadlines == pytest.approx(200.0 * elapsed, rel=0.05)


def test_overruns_are_reported_without_slowing_when_not_configured(
    hosts: list[PluginHost],
) -> None:
    config = kit.make_config(
        [{"name": "slow", "rate_hz": 100, "params": {"every": 2, "periods": 1.5}}],
        engine={"overrun_reduce_rate": False, "overrun_report_ratio": 0.3},
    )
    host = kit.make_host(config, overrun_window_s=0.3)
    hosts.append(host)
    host.start()
    assert until(lambda: host.plugins()[0]["overrunning"] is True)
    time.sleep(0.7)  # the scenario: two more overrun windows in which nothing may slow it
    slow = host.plugins()[0]
    assert slow["rate_hz"] == 100.0 and slow["rate_reductions"] == 0
    assert slow["overruns"] > 0


def test_backoff_tells_when_a_run_counted_as_stable() -> None:
    backoff = Backoff(0.5, 3.0, stable_s=10.0)
    assert backoff.running_since(100.0, 105.0) is False
    assert backoff.running_since(100.0, 110.0) is True


def _runner_records(caplog: pytest.LogCaptureFixture, level: int) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "agent.engine.runner" and r.levelno == level]


def _failed_events(host: PluginHost, name: str) -> list[dict[str, object]]:
    channel = next(ch for ch in host.channels() if ch.plugin == name)
    return [dict(ev.data) for ev in channel.drain_events() if ev.kind == "plugin_failed"]


def test_a_crash_storm_logs_one_line_per_crash_and_one_traceback(
    hosts: list[PluginHost], caplog: pytest.LogCaptureFixture
) -> None:
    kit.CrashyPlugin.setups = kit.CrashyPlugin.crashed = kit.CrashyPlugin.teardowns = 0
    config = kit.make_config(
        [{"name": "crashy", "rate_hz": 200, "params": {"crash_at": 1, "crashes": 40}}],
        engine={"restart_backoff_s": 0.002, "restart_backoff_max_s": 0.005},
    )
    caplog.set_level(logging.DEBUG, logger="agent.engine.runner")
    host = kit.make_host(config)
    hosts.append(host)
    host.start()
    assert until(lambda: kit.CrashyPlugin.crashed == 40 and host.plugins()[0]["restarts"] == 40)
    info = host.plugins()[0]
    assert info["crashes"] == 40 and info["last_error"] == "RuntimeError: boom 40"
    assert host.stats()["crashy"]["crashes"] == 40  # metrics carry the storm too
    errors = _runner_records(caplog, logging.ERROR)
    assert len(errors) == 40  # one line per crash ...
    assert [r.exc_info is not None for r in errors] == [True] + [False] * 39  # ... one traceback
    assert "crash 40 in a row" in errors[-1].getMessage()
    assert len(_runner_records(caplog, logging.INFO)) == 1  # "restarted" once, then debug
    events = _failed_events(host, "crashy")
    assert [e["crashes"] for e in events] == [1, 2, 4, 8, 16, 32]
    assert events[0]["phase"] == "tick" and events[0]["error"] == "RuntimeError: boom 1"


def test_a_plugin_failing_in_setup_keeps_retrying_with_one_line_a_try(
    hosts: list[PluginHost], caplog: pytest.LogCaptureFixture
) -> None:
    kit.CrashyPlugin.setups = kit.CrashyPlugin.crashed = kit.CrashyPlugin.teardowns = 0
    config = kit.make_config(
        [
            {"name": "crashy", "rate_hz": 200, "params": {"crash_at": 1, "setup_ok": 1}},
            {"name": "counter", "rate_hz": 200},
        ],
        engine={"restart_backoff_s": 0.002, "restart_backoff_max_s": 0.005},
    )
    caplog.set_level(logging.ERROR, logger="agent.engine.runner")
    host = kit.make_host(config)
    hosts.append(host)
    host.start()
    assert until(lambda: host.plugins()[0]["crashes"] >= 20)
    info = host.plugins()[0]
    assert info["state"] == "backoff" and info["restarts"] == 0
    assert "calibration table missing" in info["last_error"]
    errors = _runner_records(caplog, logging.ERROR)[:20]
    # The tick crash and the first setup failure each get their traceback; the rest one line.
    assert [r.exc_info is not None for r in errors] == [True, True] + [False] * 18
    assert all("setup failed" in r.getMessage() for r in errors[1:])
    events = _failed_events(host, "crashy")
    assert [e["phase"] for e in events[:3]] == ["tick", "setup", "setup"]
    assert host.plugins()[1]["state"] == "running"


def test_the_watchdog_check_ignores_a_crash_storm_but_catches_a_stuck_loop(
    hosts: list[PluginHost],
) -> None:
    from agent.service.watchdog import loops_ticking

    kit.CrashyPlugin.setups = kit.CrashyPlugin.crashed = kit.CrashyPlugin.teardowns = 0
    kit.HangPlugin.hang.clear()
    kit.HangPlugin.release.clear()
    # Crashing on the first tick, the plugin's tick counter never moves: only the supervisor's
    # handling of it (backoff, restart) shows that it is not stuck.
    config = kit.make_config(
        [
            {"name": "crashy", "rate_hz": 200, "params": {"crash_at": 1, "crashes": 100000}},
            {"name": "hang", "rate_hz": 200},
        ],
        engine={"restart_backoff_s": 0.01, "restart_backoff_max_s": 0.05},
    )
    # The production supervision interval: a crashed loop waits up to 50 ms to be noticed.
    host = kit.make_host(config, supervise_interval_s=0.05)
    hosts.append(host)
    host.start()
    check = loops_ticking(host.tick_counters)
    try:
        failures = []
        for _ in range(80):
            time.sleep(0.02)  # the scenario: a watchdog asking every 20 ms
            failures.append(check())
        assert host.plugins()[0]["crashes"] >= 10
        assert failures == [None] * 80
        kit.HangPlugin.hang.set()
        # Each check compares the tick counters with the previous check's.
        assert until(lambda: check() == "loops not ticking: hang", 5.0, 0.05)
    finally:
        kit.HangPlugin.release.set()
