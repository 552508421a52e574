"""The plugin host through EngineControl: lifecycle, params, model swap, stats, reload."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from agent.engine.api import EngineControl
from agent.engine.host import PluginHost
from agent.errors import ConfigError, ModelError, PluginError
from agent.hal.sim import SimHal
from agent.runtime.base import Model
from agent.runtime.manifest import load_manifest
from tests.support import engine as kit
from tests.support.waiting import until

ENGINE_THREADS = ("loop-", "supervisor")


def _engine_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith(ENGINE_THREADS)]


@pytest.fixture
def start_host() -> Iterator[Callable[..., PluginHost]]:
    made: list[PluginHost] = []

    def start(plugins: list[dict[str, Any]], **sections: Any) -> PluginHost:
        host = kit.make_host(kit.make_config(plugins, **sections))
        made.append(host)
        host.start()
        assert host.wait_ready(10.0)
        return host

    yield start
    for host in made:
        kit.stop_host(host)


def test_host_is_an_engine_control(start_host: Callable[..., PluginHost]) -> None:
    host = start_host([{"name": "counter", "rate_hz": 100}])
    control: EngineControl = host  # the structural type the sync, OTA and watchdog use
    assert [p["name"] for p in control.plugins()] == ["counter"]


def test_a_realtime_priority_in_process_is_warned_about(
    start_host: Callable[..., PluginHost], caplog: pytest.LogCaptureFixture
) -> None:
    start_host([{"name": "counter", "rate_hz": 100, "realtime_priority": 1}])
    assert "plugin counter: realtime_priority without isolate = true" in caplog.text


def test_plugins_and_stats_report_every_field(start_host: Callable[..., PluginHost]) -> None:
    host = start_host([{"name": "wave", "rate_hz": 100}, {"name": "counter", "enabled": False}])
    assert until(lambda: host.tick_counters()["wave"] > 20)
    wave, counter = host.plugins()
    for key in (
        "name", "state", "rate_hz", "model", "model_version", "ticks", "overruns", "restarts",
        "last_error",
    ):  # fmt: skip
        assert key in wave and key in counter
    assert wave["state"] == "running" and wave["model"] == kit.WAVE_MODEL
    assert wave["model_version"] == load_manifest(kit.MODELS / kit.WAVE_MODEL).version
    assert counter["state"] == "stopped" and counter["rate_hz"] == 200.0  # plugin default
    stats = host.stats()["wave"]
    assert set(stats["tick_us"]) == {"p50", "p99", "p999", "max"}
    assert set(stats["lateness_us"]) == {"p50", "p99", "p999", "max"}
    assert stats["ticks"] > 20 and stats["overruns"] >= 0 and stats["skipped"] >= 0
    assert 0 < stats["tick_us"]["p50"] <= stats["tick_us"]["max"]
    assert set(host.tick_counters()) == {"wave"}
    assert list(host.model_slots()) == ["wave"]


def test_telemetry_reaches_the_channel_and_actuators_the_simulator(
    start_host: Callable[..., PluginHost],
) -> None:
    host = start_host([{"name": "wave", "rate_hz": 200, "params": {"telemetry_every": 5}}])
    (channel,) = host.channels()
    assert until(lambda: channel.pending[0] >= 10)
    _, rows = channel.drain_telemetry()
    assert rows.shape[1] == 2 and set(rows[:, 0].tolist()) <= {0.0, 1.0, 2.0, 3.0}
    backend = host.hal.backend("sim")
    assert isinstance(backend, SimHal)
    sim = backend.simulator("wave")
    assert isinstance(sim, kit.WaveSim)
    assert sim.writes > 0 and sim.label[0] in (0.0, 1.0, 2.0, 3.0)


def test_stop_start_restart_and_clean_shutdown(start_host: Callable[..., PluginHost]) -> None:
    host = start_host([{"name": "counter", "rate_hz": 200}, {"name": "wave", "rate_hz": 100}])
    host.stop_plugin("counter")
    assert host.plugins()[0]["state"] == "stopped"
    assert "counter" not in host.tick_counters()
    assert "loop-counter" not in _engine_threads()
    host.start_plugin("counter")
    assert until(lambda: host.tick_counters().get("counter", 0) > 0)
    host.restart_plugin("wave")
    assert host.plugins()[1]["restarts"] == 1 and host.plugins()[1]["state"] == "running"
    with pytest.raises(PluginError, match="nope"):
        host.start_plugin("nope")
    host.stop(timeout=1.0)
    assert _engine_threads() == []
    assert all(p["state"] == "stopped" for p in host.plugins())
    assert host.plugins()[0]["ticks"] > 0  # statistics survive the stop


def test_set_params_validates_merges_and_names_the_bad_key(
    start_host: Callable[..., PluginHost],
) -> None:
    host = start_host([{"name": "counter", "rate_hz": 100, "params": {"label": "x"}}])
    assert host.set_params("counter", {"gain": 2.5}) == {"gain": 2.5, "label": "x"}
    with pytest.raises(ConfigError) as err:
        host.set_params("counter", {"gain": -1, "colour": "red"})
    paths = {path for path, _, _ in err.value.errors}
    assert paths == {"plugins[counter].params.gain", "plugins[counter].params.colour"}
    assert "plugins[counter].params.gain" in str(err.value)
    assert host.set_params("counter", {}) == {"gain": 2.5, "label": "x"}  # unchanged
    with pytest.raises(PluginError):
        host.set_params("ghost", {"gain": 1})
    # The params in force are the plugin's own model: values and schema for plugin.params.
    assert host.params("counter").model_dump() == {"gain": 2.5, "label": "x"}
    assert "gain" in type(host.params("counter")).model_json_schema()["properties"]
    with pytest.raises(PluginError, match="ghost"):
        host.params("ghost")


def test_param_changes_apply_between_ticks_never_mid_tick(
    start_host: Callable[..., PluginHost],
) -> None:
    host = start_host([{"name": "probe", "rate_hz": 200, "params": {"spin_us": 300}}])
    for value in range(1, 41):
        host.set_params("probe", {"value": value})
    assert until(lambda: kit.ParamProbePlugin.seen[-1:] == [40])
    assert kit.ParamProbePlugin.mismatches == 0
    # Each change was in force from the tick after it was handed over: none was lost.
    assert kit.ParamProbePlugin.seen == list(range(41))


def test_params_set_while_stopped_are_used_at_the_next_start(
    start_host: Callable[..., PluginHost],
) -> None:
    host = start_host([{"name": "probe", "rate_hz": 100, "enabled": False}])
    host.set_params("probe", {"value": 7})
    host.start_plugin("probe")
    assert until(lambda: kit.ParamProbePlugin.seen[-1:] == [7])


def test_model_swap_happens_between_ticks_without_skipping(
    start_host: Callable[..., PluginHost],
) -> None:
    host = start_host([{"name": "wave", "rate_hz": 100}])
    slot = host.model_slots()["wave"]
    attempts = []
    for _ in range(3):  # a VM pause can skip a deadline by itself; one clean window proves it
        # Loading runs C++ code that holds the GIL for milliseconds: done before the window.
        models = [kit.load_test_model(fmt=fmt) for fmt in ("onnx", "tflite", "onnx", "tflite")]
        before = host.stats()["wave"]
        for model in models:
            old = host.swap_model("wave", model)
            assert slot.model is model
            old.close()
        target: int = host.stats()["wave"]["ticks"] + 2

        def ticked(t: int = target) -> bool:
            return bool(host.stats()["wave"]["ticks"] > t)

        assert until(ticked)
        after = host.stats()["wave"]
        attempts.append(after["skipped"] - before["skipped"])
        if attempts[-1] == 0:
            break
    assert 0 in attempts, attempts
    assert host.plugins()[0]["state"] == "running"


def test_an_incompatible_model_is_refused_and_the_old_one_keeps_running(
    start_host: Callable[..., PluginHost],
) -> None:
    host = start_host([{"name": "wave", "rate_hz": 100}])
    model = _model_with_other_shape()
    try:
        with pytest.raises(ModelError, match="incompatible"):
            host.swap_model("wave", model)
    finally:
        model.close()
    assert host.model_slots()["wave"].model.name == kit.WAVE_MODEL
    ticks = host.tick_counters()["wave"]
    assert until(lambda: host.tick_counters()["wave"] > ticks)


def test_swapping_in_the_running_model_is_refused(start_host: Callable[..., PluginHost]) -> None:
    host = start_host([{"name": "wave", "rate_hz": 100}])
    running = host.model_slots()["wave"].model
    with pytest.raises(ModelError, match="already active"):
        host.swap_model("wave", running)
    ticks = host.tick_counters()["wave"]
    assert until(lambda: host.tick_counters()["wave"] > ticks)


def _model_with_other_shape() -> Model:
    """Another committed model (a domain one), skipping any being retrained right now."""
    want = load_manifest(kit.MODELS / kit.WAVE_MODEL).inputs
    for folder in sorted(kit.MODELS.iterdir()):
        try:
            if load_manifest(folder).inputs != want:
                return kit.load_test_model(folder.name)
        except ModelError:
            continue
    pytest.skip("no committed model with other input shapes")


def test_start_fails_clearly_on_unknown_plugin_or_bad_params() -> None:
    host = kit.make_host(kit.make_config([{"name": "ghost"}]))
    try:
        with pytest.raises(PluginError, match="ghost"):
            host.start()
    finally:
        kit.stop_host(host)
    host = kit.make_host(kit.make_config([{"name": "counter", "params": {"gain": "lots"}}]))
    try:
        with pytest.raises(ConfigError, match=r"plugins\[counter\]\.params\.gain"):
            host.start()
        assert _engine_threads() == []
    finally:
        kit.stop_host(host)


def test_reload_adds_removes_rerates_and_reparams(start_host: Callable[..., PluginHost]) -> None:
    host = start_host([{"name": "counter", "rate_hz": 100}, {"name": "slow", "rate_hz": 50}])
    new = kit.make_config(
        [
            {"name": "counter", "rate_hz": 200, "params": {"gain": 3}},
            {"name": "probe", "rate_hz": 100, "params": {"value": 5, "spin_us": 0}},
        ]
    )
    changes = host.reload(new)
    assert changes["added"] == ["probe"] and changes["removed"] == ["slow"]
    assert sorted(changes["changed"]["counter"]) == ["params", "rate_hz"]
    assert [p["name"] for p in host.plugins()] == ["counter", "probe"]
    assert host.plugins()[0]["rate_hz"] == 200.0
    assert host.set_params("counter", {}) == {"gain": 3.0, "label": "a"}
    assert until(lambda: host.tick_counters().get("probe", 0) > 0)
    assert kit.ParamProbePlugin.seen[-1] == 5
    assert "loop-slow" not in _engine_threads()


def test_a_failing_reload_changes_nothing(start_host: Callable[..., PluginHost]) -> None:
    host = start_host([{"name": "counter", "rate_hz": 100, "params": {"gain": 2}}])
    bad = kit.make_config(
        [
            {"name": "counter", "rate_hz": 300, "params": {"gain": 1}},
            {"name": "wave", "rate_hz": 100},
            {"name": "probe", "params": {"value": "not a number"}},
        ]
    )
    with pytest.raises(ConfigError, match=r"plugins\[probe\]\.params\.value"):
        host.reload(bad)
    assert [p["name"] for p in host.plugins()] == ["counter"]
    assert host.plugins()[0]["rate_hz"] == 100.0
    assert host.set_params("counter", {}) == {"gain": 2.0, "label": "a"}
    assert sorted(_engine_threads()) == ["loop-counter", "supervisor"]


def test_a_reload_failing_late_undoes_what_it_prepared(
    start_host: Callable[..., PluginHost],
) -> None:
    host = start_host([{"name": "counter", "rate_hz": 100}])
    kit.ParamProbePlugin.seen = []
    bad = kit.make_config(
        [
            {"name": "counter", "rate_hz": 100},
            {"name": "probe", "rate_hz": 100, "params": {"value": 9}},  # set up, then undone
            {"name": "wave", "model": "no_such_model"},
        ]
    )
    # The model that cannot be loaded is named by its config key, like any bad config value.
    with pytest.raises(ConfigError, match=r"plugins\[wave\]\.model: cannot use .*no_such_model"):
        host.reload(bad)
    assert [p["name"] for p in host.plugins()] == ["counter"]
    assert sorted(_engine_threads()) == ["loop-counter", "supervisor"]
    assert kit.ParamProbePlugin.seen == []  # prepared, never ticked


def test_a_reload_to_a_missing_model_names_the_key_and_keeps_the_running_one(
    start_host: Callable[..., PluginHost],
) -> None:
    host = start_host([{"name": "wave", "rate_hz": 100}])
    running = host.model_slots()["wave"].model
    bad = kit.make_config([{"name": "wave", "rate_hz": 50, "model": "no_such_model"}])
    with pytest.raises(ConfigError) as caught:
        host.reload(bad)
    key, message, value = caught.value.errors[0]
    assert (key, value) == ("plugins[wave].model", "no_such_model")
    assert message.startswith("cannot use model: ") and "no_such_model" in message
    assert host.model_slots()["wave"].model is running
    assert host.plugins()[0]["rate_hz"] == 100.0 and host.plugins()[0]["state"] == "running"
