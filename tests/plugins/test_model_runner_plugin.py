"""The model runner: waveform_classifier from configuration alone, on the sim HAL and over MQTT."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from agent.config import load_config
from agent.config.hal import MqttDeviceConfig
from agent.config.sections import RuntimeConfig
from agent.errors import ModelError, PluginError
from agent.runtime.base import Model
from agent.runtime.loader import load_model
from plugins.model_runner import ModelRunnerParams, ModelRunnerPlugin
from sim.harness import run_lockstep
from sim.signals import SEGMENT_S, SHAPES, SignalSimulator, shape_at

REPO = Path(__file__).resolve().parents[2]
MODELS = REPO / "models"
EXAMPLE = REPO / "firmware-configs" / "examples" / "waveform-mqtt.toml"
EDGE_AGENT = str(Path(sys.executable).parent / "edge-agent")
PARAMS: dict[str, Any] = {
    "window": 16,
    "channels": [{"sensor": "signal"}],
    "outputs": [{"name": "shape", "labels": list(SHAPES)}],
    "rules": [
        {"kind": "class_change", "output": "shape", "min_probability": 0.7, "hold_s": 0.3},
        {"kind": "threshold", "output": "shape", "value": 1, "above": 0.9, "clear": 0.5},
    ],
}


@pytest.fixture(params=["tflite", "onnx"])
def waveform(request: pytest.FixtureRequest) -> Iterator[Model]:
    model = load_model(MODELS / "waveform_classifier", RuntimeConfig(), fmt=request.param)
    yield model
    model.close()


def _plugin(params: dict[str, Any]) -> ModelRunnerPlugin:
    cls = ModelRunnerPlugin.for_params(ModelRunnerParams.model_validate(params))
    plugin = cls()
    assert isinstance(plugin, ModelRunnerPlugin)
    return plugin


def test_it_classifies_the_simulated_signal_with_no_code(waveform: Model) -> None:
    sim = SignalSimulator()
    sim.reset(0)
    plugin = _plugin(PARAMS)
    assert dict(type(plugin).sensors).keys() == {"signal"}
    assert type(plugin).telemetry_fields == ("shape_class", "shape_p", "dropouts")
    result = run_lockstep(plugin, sim, duration_s=8 * SEGMENT_S, rate_hz=50, params=PARAMS,
                          model=waveform)  # fmt: skip
    changes = [e for e in result.events if e.kind == "class_change"]
    assert len(changes) >= 7  # one per segment, the first from nothing
    for e in changes:
        assert e.data["label"] == SHAPES[shape_at(e.ts_ns / 1e9)], e
    raised = [e.data["state"] for e in result.events if e.kind == "threshold"]
    assert raised[:2] == ["raised", "cleared"]  # hysteresis: the square segment, then after
    rows = np.asarray(result.telemetry)
    assert rows.shape[1] == 3 and set(np.unique(rows[:, 0])) <= {0.0, 1.0, 2.0, 3.0}


def test_params_are_checked_with_the_key_that_is_wrong() -> None:
    with pytest.raises(ValidationError, match="rule output 'nope' is not one of"):
        ModelRunnerParams.model_validate({**PARAMS, "rules": [{"kind": "threshold",
                                          "output": "nope", "above": 1, "clear": 0}]})  # fmt: skip
    with pytest.raises(ValidationError, match=r"clear \(2.0\) must not exceed above"):
        ModelRunnerParams.model_validate(
            {"rules": [{"kind": "threshold", "output": "output", "above": 1, "clear": 2}]}
        )
    with pytest.raises(ValidationError, match="class_change needs labels"):
        ModelRunnerParams.model_validate({"rules": [{"kind": "class_change", "output": "output"}]})
    with pytest.raises(ValidationError, match="channels name a sensor twice"):
        ModelRunnerParams.model_validate({"channels": [{"sensor": "a"}, {"sensor": "a"}]})


def test_a_model_of_another_shape_is_refused(waveform: Model) -> None:
    sim = SignalSimulator()
    sim.reset(0)
    params = {**PARAMS, "window": 32}
    with pytest.raises(ModelError, match=r"32 readings x 1 channel\(s\) = 32 values"):
        run_lockstep(_plugin(params), sim, duration_s=0.1, rate_hz=50, params=params,
                     model=waveform)  # fmt: skip
    params = {**PARAMS, "outputs": [{"name": "shape", "labels": ["a", "b"]}], "rules": []}
    with pytest.raises(ModelError, match="output 'shape' needs 2 values"):
        run_lockstep(_plugin(params), sim, duration_s=0.1, rate_hz=50, params=params,
                     model=waveform)  # fmt: skip


def test_layout_changes_need_a_restart_levels_do_not(waveform: Model) -> None:
    sim = SignalSimulator()
    sim.reset(0)
    plugin = _plugin(PARAMS)
    run_lockstep(plugin, sim, duration_s=0.5, rate_hz=50, params=PARAMS, model=waveform)
    lower = {**PARAMS, "rules": [PARAMS["rules"][0], {**PARAMS["rules"][1], "above": 0.8}]}
    plugin.apply_params(ModelRunnerParams.model_validate(lower))
    with pytest.raises(PluginError, match="restart the plugin"):
        plugin.apply_params(ModelRunnerParams.model_validate({**PARAMS, "window": 8}))


def test_the_example_config_validates_and_switches_to_the_simulator() -> None:
    cfg = load_config(EXAMPLE, check_files=False)
    (pc,) = cfg.plugins
    assert (pc.name, pc.model) == ("model_runner", "waveform_classifier")
    ModelRunnerParams.model_validate(pc.params)
    signal_device = cfg.hal.devices["model_runner.signal"]
    assert isinstance(signal_device, MqttDeviceConfig)
    assert signal_device.topic == "lab/signal"
    sim_cfg = load_config(EXAMPLE, check_files=False, env={"EDGE_AGENT__HAL__DEVICES": "{}"})
    assert sim_cfg.hal.devices == {} and sim_cfg.hal.backend == "sim"


def _wave(kind: str, t: float) -> float:
    u = (5.0 * t) % 1.0
    if kind == "sine":
        return math.sin(2 * math.pi * u)
    return 1.0 if u < 0.5 else -1.0


def test_the_example_runs_from_mqtt_samples_to_class_change_events(
    broker: Any, probe_factory: Any, tmp_path: Path
) -> None:
    probe = probe_factory(broker)
    probe.subscribe("edge/waveform-demo/#")
    env = {
        **os.environ,
        "EDGE_AGENT__MQTT__PORT": str(broker.port),
        "EDGE_AGENT__STATE_DIR": str(tmp_path / "state"),
    }
    agent = subprocess.Popen(
        [EDGE_AGENT, "run", "--config", str(EXAMPLE), "--duration", "60"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    kind = ["sine"]
    stop = threading.Event()

    def feed() -> None:  # one sample per 20 ms, the plugin's tick
        start = time.monotonic()
        i = 0
        while not stop.is_set():
            value = _wave(kind[0], i * 0.02)
            probe.client.publish("lab/signal", f'{{"value": {value:.4f}}}', qos=0)
            i += 1
            time.sleep(max(0.0, start + i * 0.02 - time.monotonic()))  # the sensor's pace

    events = "edge/waveform-demo/events/model_runner"
    feeder = threading.Thread(target=feed, daemon=True)
    try:
        assert probe.wait_for(lambda: probe.count("edge/waveform-demo/status") > 0, 20)
        feeder.start()
        # A window still filling, or samples bunched by a loaded machine, may pass through
        # another class first: what counts is that the sine is recognised, then the square.
        probe.wait_payload(
            events,
            lambda p: p["kind"] == "class_change" and p["data"]["label"] == "sine",
            timeout=30,
        )
        kind[0] = "square"
        square = probe.wait_payload(
            events, lambda p: p.get("data", {}).get("label") == "square", timeout=20
        )
        assert square["data"]["previous"] != "square" and square["score"] >= 0.7
    except AssertionError as exc:  # say what the agent logged: a wait alone says only "nothing"
        stop.set()
        agent.send_signal(signal.SIGTERM)
        _, err = agent.communicate(timeout=20)
        raise AssertionError(
            f"{exc}\nagent exit {agent.returncode}, stderr:\n{err[-4000:]}"
        ) from None
    finally:
        stop.set()
        if agent.returncode is None:
            agent.send_signal(signal.SIGTERM)
            _, err = agent.communicate(timeout=20)
    assert agent.returncode == 0, err
