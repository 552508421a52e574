"""The plugin contract (agent.testing.PluginContract) over the built-in plugins and the runner.

It replaces the plugins' own copies of the same checks (no allocation per tick, a model of
another shape refused); their test files keep what is particular to each domain."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from agent.testing import PluginContract
from plugins.energy import EnergyPlugin
from plugins.model_runner import ModelRunnerPlugin
from plugins.robot import RobotPlugin
from plugins.smart_home import SmartHomePlugin

MODELS = Path(__file__).resolve().parents[2] / "models"


class TestRobotContract(PluginContract):
    plugin_class = RobotPlugin
    models_dir = MODELS
    changed_params: ClassVar[dict[str, Any] | None] = {"estop_distance": 0.4}


class TestEnergyContract(PluginContract):
    plugin_class = EnergyPlugin
    models_dir = MODELS
    changed_params: ClassVar[dict[str, Any] | None] = {"threshold": 0.9}
    warmup_ticks = 4000  # rings primed, blocks closed, an hour aggregated


class TestEnergyOnnxContract(TestEnergyContract):
    model_format = "onnx"  # the energy plugin runs either file; both keep the contract


class TestSmartHomeContract(PluginContract):
    plugin_class = SmartHomePlugin
    models_dir = MODELS
    changed_params: ClassVar[dict[str, Any] | None] = {"comfort_low": 20.5}


class TestModelRunnerContract(PluginContract):
    plugin_class = ModelRunnerPlugin
    models_dir = MODELS
    model_name = "waveform_classifier"
    params: ClassVar[dict[str, Any]] = {
        "outputs": [{"name": "shape", "labels": ["sine", "square", "triangle", "sawtooth"]}],
        "rules": [{"kind": "class_change", "output": "shape", "min_probability": 0.7}],
    }
    changed_params: ClassVar[dict[str, Any] | None] = {
        **params,
        "rules": [{"kind": "class_change", "output": "shape", "min_probability": 0.9}],
    }
