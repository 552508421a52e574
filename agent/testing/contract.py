"""The plugin contract: what the host relies on from every plugin, as tests a plugin author runs.

Subclass it in a test module under a name pytest collects, and say what to run::

    from agent.testing import PluginContract

    class TestMyPlugin(PluginContract):
        plugin_class = MyPlugin
        params = {"threshold": 0.8}
        changed_params = {"threshold": 0.6}
        models_dir = Path(__file__).parent / "models"

Each check builds the plugin as the host would (a model slot, devices, an output channel),
ticks it on a simulated clock, and feeds it from its own simulator (the plugin's `simulator`)
or, without one, a constant reading (`constant_reading`).
"""

from __future__ import annotations

import gc
import inspect
import tempfile
import tracemalloc
import weakref
from pathlib import Path
from typing import Any, ClassVar

import pytest

from agent.errors import ModelError
from agent.hal.simulator import Simulator
from agent.plugin.base import Plugin, PluginParams
from agent.runtime.base import Model
from agent.testing.rig import Fault, Rig, build_rig


class PluginContract:
    """The contract suite; set `plugin_class` (and what else differs) in a subclass."""

    plugin_class: ClassVar[type[Plugin]]
    params: ClassVar[dict[str, Any]] = {}
    changed_params: ClassVar[dict[str, Any] | None] = None
    """Params applied between two ticks; None skips that check (the plugin has no params)."""
    model_name: ClassVar[str | None] = None
    """Model folder under `models_dir`; None means the plugin's `default_model`."""
    models_dir: ClassVar[Path] = Path("models")
    model_format: ClassVar[str | None] = None
    rate_hz: ClassVar[float | None] = None
    seed: ClassVar[int] = 0
    constant_reading: ClassVar[float] = 0.5
    warmup_ticks: ClassVar[int] = 2000
    measured_ticks: ClassVar[int] = 3000
    allocation_budget: ClassVar[int] = 1024
    """Bytes the plugin's own files may keep over `measured_ticks`."""
    telemetry_within: ClassVar[int] = 5000
    dropout_ticks: ClassVar[int] = 30
    dropout_sensors: ClassVar[tuple[str, ...] | None] = None
    """Sensors whose faults must raise `sensor_dropout`; None means every declared sensor."""

    # --- hooks a subclass may override ---------------------------------------------------------

    def make_params(self, data: dict[str, Any]) -> PluginParams:
        """Validate `data` with the plugin's own Params model."""
        return self.plugin_class.Params.model_validate(data)

    def load_model(self) -> Model | None:
        """The model the plugin runs with (None for a plugin without one)."""
        name = self.model_name or self.plugin_class.default_model
        if name is None:
            return None
        from agent.config.sections import RuntimeConfig
        from agent.runtime.loader import load_model

        fmt: Any = self.model_format
        return load_model(self.models_dir / name, RuntimeConfig(accelerator="cpu"), fmt=fmt)

    def wrong_model(self, folder: Path) -> Model:
        """A model no plugin fits: one input and output of 7 values (built with `onnx`)."""
        onnx = pytest.importorskip("onnx", reason="the default wrong_model builds an ONNX file")
        from agent.runtime.onnx import OnnxModel

        x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 7])
        y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 7])
        graph = onnx.helper.make_graph([onnx.helper.make_node("Relu", ["x"], ["y"])], "w", [x], [y])
        model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
        model.ir_version = 8
        onnx.save(model, str(folder / "wrong.onnx"))
        return OnnxModel(folder / "wrong.onnx", name="wrong", version="0.0.0")

    def make_simulator(self) -> Simulator | None:
        """The plugin's own simulator, reset with `seed` (None: constant readings)."""
        ref = self.plugin_class.simulator
        if ref is None:
            return None
        from agent.hal.simulator import load_simulator

        return load_simulator(ref, self.seed)

    def params_applied(self, plugin: Plugin, params: PluginParams) -> bool:
        """True when the plugin holds `params` (by default: an attribute equal to them)."""
        return any(_same(v, params) for v in vars(plugin).values())

    # --- plumbing ------------------------------------------------------------------------------

    def rig(self, params: dict[str, Any] | None = None, model: Model | None = None) -> Rig:
        """The plugin, set up as the host would set it up."""
        p = self.make_params(self.params if params is None else params)
        cls = self.plugin_class.for_params(p)
        rate = self.rate_hz or cls.default_rate_hz
        m = self.load_model() if model is None else model
        sim = self.make_simulator()
        return build_rig(cls, p, m, rate_hz=rate, sim=sim, constant=self.constant_reading)

    def _needs_model(self) -> None:
        if (self.model_name or self.plugin_class.default_model) is None:
            pytest.skip(f"{self.plugin_class.__name__} runs without a model")

    # --- the contract ----------------------------------------------------------------------------

    def test_tick_allocates_nothing_after_warm_up(self) -> None:
        """Memory kept by the plugin's own files does not grow once it is warm."""
        rig = self.rig()
        mine = [tracemalloc.Filter(True, str(_package_dir(self.plugin_class) / "*"))]
        rig.run(self.warmup_ticks)
        rig.drain()
        tracemalloc.start()
        try:
            rig.run(200)  # two traced points, so values merely replaced cancel out
            rig.drain()
            rig.events.clear()  # events may allocate (they are rare); the rig kept them
            gc.collect()
            before = tracemalloc.take_snapshot().filter_traces(mine)
            rig.run(self.measured_ticks)
            rig.drain()
            rig.events.clear()
            gc.collect()
            after = tracemalloc.take_snapshot().filter_traces(mine)
        finally:
            tracemalloc.stop()
        diff = after.compare_to(before, "lineno")
        grown = sum(s.size_diff for s in diff if s.size_diff > 0)
        lines = [str(s) for s in diff if s.size_diff > 0][:5]
        assert grown <= self.allocation_budget, f"{grown} bytes kept: {lines}"

    def test_params_apply_between_ticks(self) -> None:
        """New params, applied between two ticks, are taken and ticking goes on."""
        if self.changed_params is None:
            pytest.skip("no changed_params given")
        rig = self.rig()
        rig.run(100)
        new = self.make_params(self.changed_params)
        rig.plugin.apply_params(new)
        rig.run(100)
        assert self.params_applied(rig.plugin, new), "the plugin does not hold the new params"

    def test_a_wrong_shape_model_is_refused_at_setup(self) -> None:
        """Setting up on a model of other shapes raises ModelError (nothing else)."""
        self._needs_model()
        with tempfile.TemporaryDirectory() as tmp:
            wrong = self.wrong_model(Path(tmp))
            with pytest.raises(ModelError):
                self.rig(model=wrong)
            wrong.close()

    def test_a_wrong_shape_model_is_refused_at_swap(self) -> None:
        """`check_model` (what OTA asks before a swap) raises ModelError for other shapes."""
        self._needs_model()
        rig = self.rig()
        rig.run(10)
        with tempfile.TemporaryDirectory() as tmp:
            wrong = self.wrong_model(Path(tmp))
            with pytest.raises(ModelError):
                rig.plugin.check_model(wrong)
            wrong.close()
        assert rig.ctx.model is not None
        rig.plugin.check_model(rig.ctx.model.model)  # its own model still passes

    @pytest.mark.parametrize("fault", ["nan", "inf", "missing"])
    def test_bad_readings_give_sensor_dropout(self, fault: Fault) -> None:
        """A NaN, infinite or missing reading on any sensor is an event, not an exception."""
        rig = self.rig()
        rig.run(200)
        names = self.dropout_sensors or tuple(rig.sensors)
        for name in names:
            rig.drain()
            seen = len(rig.events)
            rig.sensors[name].fault = fault
            rig.run(self.dropout_ticks)
            rig.sensors[name].fault = ""
            rig.run(self.dropout_ticks)
            rig.drain()
            kinds = [(e.kind, e.data) for e in rig.events[seen:]]
            assert any(k == "sensor_dropout" for k, _ in kinds), f"{name} {fault}: {kinds}"

    def test_declared_telemetry_fields_are_the_fields_sent(self) -> None:
        """Telemetry arrives, and every row has exactly the declared fields."""
        rig = self.rig()
        fields = type(rig.plugin).telemetry_fields
        assert rig.ctx.out.fields == fields
        rig.run(self.telemetry_within)
        rig.drain()
        assert rig.rows > 0, f"no telemetry in {self.telemetry_within} ticks"
        assert rig.widths == {len(fields)}

    def test_teardown_releases(self) -> None:
        """After teardown nothing outside the plugin keeps its model, devices or channel."""
        rig = self.rig()
        rig.run(50)
        rig.plugin.teardown()
        refs: list[weakref.ref[Any]] = [weakref.ref(rig.ctx.out)]
        refs += [weakref.ref(s) for s in rig.sensors.values()]
        if rig.ctx.model is not None:
            refs.append(weakref.ref(rig.ctx.model))
            rig.ctx.model.model.close()
        del rig
        gc.collect()
        kept = [r() for r in refs if r() is not None]
        assert kept == [], f"still referenced after teardown: {kept}"


def _package_dir(cls: type) -> Path:
    return Path(inspect.getfile(cls)).resolve().parent


def _same(value: object, params: PluginParams) -> bool:
    if value is params:
        return True
    if not isinstance(value, PluginParams):
        return False
    try:
        return bool(value.model_dump() == params.model_dump())
    except Exception:
        return False
