"""Supervision: restart with exponential backoff, overrun reports and rate reduction, while the
other loops keep their rates."""

from __future__ import annotations

import itertools
import logging
import re
import time
from collections.abc import Callable, Iterator

import engine_testkit as kit
import pytest

from agent.engine.supervisor import Backoff, OverrunWatch
from agent.plugin.host import PluginHost


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


def _until(check: Callable[[], bool], timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if check():
            return True
        time.sleep(0.01)
    return False


@pytest.fixture
def hosts() -> Iterator[list[PluginHost]]:
    made: list[PluginHost] = []
    yield made
    for host in made:
        kit.stop_host(host)


def test_a_crashing_plugin_restarts_with_backoff_while_another_keeps_its_rate(
    hosts: list[PluginHost], caplog: pytest.LogCaptureFixture
) -> None:
    kit.CrashyPlugin.setups = kit.CrashyPlugin.crashed = kit.CrashyPlugin.teardowns = 0
    setups: list[float] = []
    original_setup = kit.CrashyPlugin.setup

    def timed_setup(self: kit.CrashyPlugin, ctx: kit.PluginContext) -> None:
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
        saw_backoff = _until(lambda: host.plugins()[0]["state"] == "backoff")
        assert _until(lambda: kit.CrashyPlugin.crashed == 5 and len(setups) == 6)
        assert _until(lambda: host.plugins()[0]["state"] == "running")
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
    assert _until(lambda: host.plugins()[0]["rate_reductions"] >= 1)
    slow, counter = host.plugins()
    assert slow["overrunning"] is True
    assert slow["rate_hz"] <= 50.0 and slow["configured_rate_hz"] == 100.0
    assert counter["rate_hz"] == 200.0 and counter["rate_reductions"] == 0
    before, t0 = host.stats()["counter"], time.perf_counter()
    time.sleep(1.0)
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
    assert _until(lambda: host.plugins()[0]["overrunning"] is True)
    time.sleep(0.7)
    slow = host.plugins()[0]
    assert slow["rate_hz"] == 100.0 and slow["rate_reductions"] == 0
    assert slow["overruns"] > 0
