"""The loop's wait modes: `sleep` (sleep, then spin the last spin_us) and `spin` (a hot core)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from agent.config import ConfigError, load_config
from agent.engine.loop import Loop


def _sleeps_on_loop_thread(monkeypatch: pytest.MonkeyPatch, wait: str) -> int:
    calls: list[str] = []
    real_sleep = time.sleep

    def sleep(seconds: float) -> None:
        calls.append(threading.current_thread().name)
        real_sleep(seconds)

    monkeypatch.setattr(time, "sleep", sleep)
    ticked = threading.Event()
    ticks = [0]

    def tick(now: int) -> None:
        ticks[0] += 1
        if ticks[0] >= 5:
            ticked.set()

    loop = Loop("wait", tick, rate_hz=200.0, wait=wait)
    loop.start()
    assert ticked.wait(10.0)
    loop.stop()
    assert loop.join(5.0)
    return calls.count("loop-wait")


def test_sleep_mode_sleeps_between_ticks(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _sleeps_on_loop_thread(monkeypatch, "sleep") > 0


def test_spin_mode_never_sleeps(monkeypatch: pytest.MonkeyPatch) -> None:
    # The whole period is spun: the thread never gives its core away between ticks.
    assert _sleeps_on_loop_thread(monkeypatch, "spin") == 0


def test_spin_mode_still_sees_a_stop_at_a_low_rate() -> None:
    loop = Loop("slow-spin", lambda now: None, rate_hz=0.1, wait="spin")
    loop.start()
    assert loop.started.wait(5.0)
    loop.stop()
    # The spin checks for a stop every 50 ms, far inside the 10 s period.
    assert loop.join(5.0)


def test_wait_is_a_plugin_setting(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text('[[plugins]]\nname = "robot"\ncpu_affinity = [1]\nwait = "spin"\n')
    (plugin,) = load_config(path, env={}).plugins
    assert plugin.wait == "spin" and plugin.cpu_affinity == [1]


def test_an_unknown_wait_mode_names_the_choices(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text('[[plugins]]\nname = "robot"\nwait = "nap"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    message = str(caught.value)
    assert "wait" in message and "'sleep' or 'spin'" in message and "nap" in message
