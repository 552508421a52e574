"""The energy plugin through the real runtime and sim HAL: beats its baseline, survives dropouts."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from agent.config.sections import RuntimeConfig
from agent.hal.base import Buffer, Sensor, SensorSpec
from agent.hal.sim import SimActuator
from agent.plugin.base import PluginContext
from agent.plugin.channel import OutputChannel
from agent.runtime.base import Model
from agent.runtime.loader import load_model
from agent.runtime.slot import ModelSlot
from plugins.energy import TELEMETRY_FIELDS, EnergyPlugin, Params, const
from sim.energy import dataset
from sim.energy.eval import BASELINE_PARAMS, run_episode
from sim.energy.metrics import Score
from sim.energy.world import HouseholdPower, Recording, make_world
from sim.harness import run_lockstep

MODELS = Path(__file__).resolve().parents[2] / "models"
FOLDER = MODELS / "energy_anomaly"


@pytest.fixture(scope="module")
def tflite_model() -> Iterator[Model]:
    model = load_model(FOLDER, RuntimeConfig(), fmt="tflite")
    yield model
    model.close()


class ReplaySensor(Sensor):
    """Plays a recording back one reading per tick (NaN readings as NaN, missing as False)."""

    def __init__(self, rec: Recording) -> None:
        self.spec = SensorSpec((1,))
        self._mains = rec.mains
        self._missing = rec.dropout == 1
        self.i = 0

    def read_into(self, out: Buffer) -> bool:
        i = self.i
        self.i = i + 1
        if self._missing[i]:
            return False
        out[0] = self._mains[i]
        return True


def replay_context(
    rec: Recording, model: Model | None, params: dict[str, object] | None = None
) -> tuple[PluginContext, ReplaySensor, HouseholdPower]:
    sensor = ReplaySensor(rec)
    sink = HouseholdPower(fault_rate_per_h=0.0)
    ctx = PluginContext(
        name="energy",
        rate_hz=50.0,
        params=Params.model_validate(params or {}),
        model=ModelSlot(model) if model is not None else None,
        sensors={"mains": sensor},
        actuators={"alarm": SimActuator(sink, "alarm", EnergyPlugin.actuators["alarm"])},
        out=OutputChannel("energy", TELEMETRY_FIELDS, capacity=1 << 14),
    )
    return ctx, sensor, sink


def test_constants_match_the_training_layout_and_manifest() -> None:
    assert (const.FINE, const.COARSE, const.BLOCK) == (dataset.FINE, dataset.COARSE, dataset.BLOCK)
    assert const.CLASSES == dataset.CLASSES
    manifest = json.loads((FOLDER / "manifest.json").read_text())
    pre = manifest["preprocessing"]
    assert (pre["fine_window"], pre["coarse_window"], pre["coarse_block_s"]) == (256, 128, 60)
    assert manifest["inputs"][0]["shape"] == [1, const.INPUT_SIZE]
    # The plugin's default alarm settings are the ones tuned in training.
    p = Params()
    alarm = pre["alarm"]
    assert (p.threshold, p.confirm_ticks, p.rearm_ticks) == (
        alarm["threshold"], alarm["confirm_ticks"], alarm["rearm_ticks"],
    )  # fmt: skip
    assert p.release == pytest.approx(alarm["release"])


def test_model_input_is_the_window_training_saw(tflite_model: Model) -> None:
    sim = make_world(10_003, fault_rate_per_h=3.0, dropout_rate_per_h=8.0)
    rec = sim.record(5000)
    assert (rec.dropout == 1).any() and (rec.dropout == 2).any()
    ctx, _, _ = replay_context(rec, tflite_model)
    plugin = EnergyPlugin()
    plugin.setup(ctx)
    assert ctx.model is not None
    fresh = np.flatnonzero(rec.dropout == 0)  # the plugin writes the input only on these
    checks = {int(fresh[np.searchsorted(fresh, c)]) for c in (0, 59, 60, 61, 300, 1799, 4321)}
    checks.add(int(fresh[-1]))
    want = np.sqrt(dataset.windows(dataset.forward_fill(rec.mains), np.array(sorted(checks))))
    got = []
    for i in range(len(rec.mains)):
        plugin.tick(i * 1_000_000_000)
        if i in checks:
            got.append(ctx.model.inputs[0][0].copy())
    np.testing.assert_allclose(np.array(got), want, rtol=1e-6)


def test_beats_the_threshold_baseline_closed_loop(tflite_model: Model) -> None:
    # Six held-out households, 6 h each with two faults an hour: a few seconds, ~20 faults.
    f1 = {}
    for name, model, params in (
        ("model", tflite_model, {}),
        ("baseline", None, BASELINE_PARAMS),
    ):
        total = Score()
        for seed in range(10_000, 10_006):
            score, _, _ = run_episode(
                seed, hours=6.0, model=model, params=params, fault_rate_per_h=2.0
            )
            total += score
        f1[name] = total.f1
    assert f1["model"] > f1["baseline"] + 0.1, f1


def test_keeps_running_through_dropouts_and_reports_each_once(tflite_model: Model) -> None:
    sim = make_world(10_010, fault_rate_per_h=0.0, dropout_rate_per_h=12.0)
    plugin = EnergyPlugin()
    result = run_lockstep(plugin, sim, duration_s=2 * 3600, rate_hz=50.0, model=tflite_model)
    assert result.ticks == 2 * 3600
    seen = [d for d in sim.dropouts if d.start < 2 * 3600]
    events = [e for e in result.events if e.kind == "sensor_dropout"]
    assert len(seen) >= 5
    assert len(events) == len(seen)
    assert {e.data["reason"] for e in events} == {"missing", "nan"}
    for e, d in zip(events, seen, strict=True):
        assert e.ts_ns / 1e9 == pytest.approx(d.start)
    last = dict(zip(TELEMETRY_FIELDS, result.telemetry[-1], strict=True))
    assert last["dropouts"] == len(seen)
    assert last["missing_samples"] == sum(min(d.end, 2 * 3600) - d.start for d in seen)
    assert all(np.isfinite(row).all() for row in result.telemetry)


def test_dropout_before_the_first_reading_waits_without_crashing(tflite_model: Model) -> None:
    rec = make_world(10_011, fault_rate_per_h=0.0, dropout_rate_per_h=0.0).record(400)
    mains = rec.mains.copy()
    mains[:30] = np.nan
    nan_start = Recording(rec.t0, mains, np.where(np.arange(400) < 30, 2, 0).astype(np.int8),
                          rec.circuits)  # fmt: skip
    ctx, _, _ = replay_context(nan_start, tflite_model)
    plugin = EnergyPlugin()
    plugin.setup(ctx)
    for i in range(400):
        plugin.tick(i)
    events = ctx.out.drain_events()
    assert [e.kind for e in events] == ["sensor_dropout"]
    _, rows = ctx.out.drain_telemetry()
    assert len(rows) == (400 - 30) // 60


def test_energy_aggregates_follow_the_readings(tflite_model: Model) -> None:
    rec = make_world(10_012, fault_rate_per_h=0.0, dropout_rate_per_h=0.0).record(2 * 3600)
    ctx, _, _ = replay_context(rec, tflite_model, {"telemetry_every": 600})
    plugin = EnergyPlugin()
    plugin.setup(ctx)
    for i in range(len(rec.mains)):
        plugin.tick(i)
    _, rows = ctx.out.drain_telemetry()
    last = dict(zip(TELEMETRY_FIELDS, rows[-1], strict=True))
    watts = rec.mains.astype(np.float64)
    assert last["energy_kwh"] == pytest.approx(watts.sum() / 3.6e6, rel=1e-6)
    assert last["energy_kwh_1h"] == pytest.approx(watts[-3600:].sum() / 3.6e6, rel=1e-6)
    assert last["mean_w"] == pytest.approx(watts[-600:].mean(), rel=1e-4)
    assert len(rows) == len(watts) // 600


def test_params_apply_between_ticks(tflite_model: Model) -> None:
    sim = make_world(10_013, fault_rate_per_h=4.0, dropout_rate_per_h=0.0)
    plugin = EnergyPlugin()

    def switch(_: object, now_ns: int) -> None:
        if now_ns == 1800 * 1_000_000_000:
            plugin.apply_params(Params(telemetry_every=10, detector="threshold"))

    result = run_lockstep(
        plugin, sim, duration_s=3600, rate_hz=50.0, model=tflite_model, on_tick=switch
    )
    ts = np.array(result.telemetry_ts_ns) / 1e9
    assert (ts < 1800).sum() == pytest.approx(30, abs=1)
    assert (ts >= 1800).sum() == pytest.approx(180, abs=1)
    alarms = [e for e in result.events if e.kind != "sensor_dropout"]
    assert {e.data["detector"] for e in alarms if e.ts_ns / 1e9 > 1800} <= {"threshold"}
    assert {e.data["detector"] for e in alarms if e.ts_ns / 1e9 <= 1800} <= {"model"}


def test_alarm_indicator_follows_the_alarm(tflite_model: Model) -> None:
    sim = make_world(10_014, fault_rate_per_h=6.0, dropout_rate_per_h=0.0)
    plugin = EnergyPlugin()
    seen: list[float] = []
    result = run_lockstep(
        plugin, sim, duration_s=3 * 3600, rate_hz=50.0, model=tflite_model,
        on_tick=lambda s, _: seen.append(s.alarm),  # type: ignore[attr-defined]
    )  # fmt: skip
    rises = int(np.sum(np.diff(np.array(seen)) > 0.5))
    alarms = [e for e in result.events if e.kind != "sensor_dropout"]
    assert alarms and rises == len(alarms)


def test_runs_the_threshold_baseline_without_a_model() -> None:
    sim = make_world(10_015, fault_rate_per_h=6.0, dropout_rate_per_h=0.0)
    result = run_lockstep(EnergyPlugin(), sim, duration_s=3600, rate_hz=50.0)
    assert result.ticks == 3600
    assert all(e.data.get("detector") == "threshold" for e in result.events
               if e.kind != "sensor_dropout")  # fmt: skip


def test_params_validate_bounds() -> None:
    with pytest.raises(ValueError, match="release"):
        Params(threshold=0.5, release=0.6)
    with pytest.raises(ValueError):
        Params(bogus=1)  # type: ignore[call-arg]


def test_quick_evaluation_reports_every_variant(tmp_path: Path) -> None:
    from sim.energy.eval import evaluate

    result = evaluate(quick=True, episodes=1, seed=10_020, plot_dir=tmp_path)
    assert result["domain"] == "energy" and result["metric"] == "f1"
    assert result["higher_is_better"] is True
    assert set(result["results"]) >= {"baseline", "float", "int8_tflite", "int8_onnx"}
    assert all(0.0 <= v <= 1.0 for v in result["results"].values())
    assert all(Path(p).stat().st_size > 10_000 for p in result["extra"]["plots"])
