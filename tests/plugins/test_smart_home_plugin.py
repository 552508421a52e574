"""The smart home plugin in closed loop: real LiteRT model, sim HAL devices, output channel."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from agent.config.sections import RuntimeConfig
from agent.runtime.base import Model
from agent.runtime.loader import load_model
from plugins.smart_home import SmartHomePlugin
from plugins.smart_home.config import Params
from sim.harness import run_lockstep
from sim.smart_home import HouseSim
from sim.smart_home.eval import run_episode

MODEL_DIR = Path(__file__).resolve().parents[2] / "models" / "smart_home_comfort"
DAY = 86400.0


@pytest.fixture(scope="module")
def model() -> Iterator[Model]:
    m = load_model(MODEL_DIR, RuntimeConfig(), fmt="tflite")
    yield m
    m.close()


def _house(seed: int, **kw: Any) -> HouseSim:
    sim = HouseSim(**{"start_hour": 0.0, "window_per_h": 0.15, "dropout_per_h": 0.0, **kw})
    sim.reset(seed)
    return sim


def test_beats_the_fixed_schedule_thermostat(model: Model) -> None:
    seeds = (10_002,)  # a cold day: the schedule misses people home outside its hours
    base = [run_episode(s, 1.0, None)[0] for s in seeds]
    ours = [run_episode(s, 1.0, model)[0] for s in seeds]
    key = "comfort_violation_kh_per_day"
    assert sum(r[key] for r in ours) < 0.5 * sum(r[key] for r in base)
    energy = "energy_kwh_per_day"
    assert sum(r[energy] for r in ours) < 1.1 * sum(r[energy] for r in base)


def test_emits_control_events_and_telemetry(model: Model) -> None:
    sim = _house(10_005, window_per_h=0.6)
    res = run_lockstep(SmartHomePlugin(), sim, duration_s=DAY, rate_hz=10.0, model=model)
    kinds = {e.kind for e in res.events}
    assert {"preheat_start", "setback", "ventilation_on", "window_open_hvac_off"} <= kinds
    fields = SmartHomePlugin.telemetry_fields
    rows = np.asarray(res.telemetry)
    assert rows.shape[1] == len(fields)
    assert np.isfinite(rows).all()
    # One row per 10 ticks by default, 30 s of house time per tick.
    assert len(rows) == pytest.approx(res.ticks / 10, abs=1)
    temps = rows[:, [fields.index(f"temp_{r}") for r in ("living", "bedroom")]]
    assert temps.min() > 10.0 and temps.max() < 35.0


class FlakyHouse(HouseSim):
    """A house whose CO2 sensor reads NaN and whose temperature sensor goes silent, on cue."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.steps = 0

    def step(self) -> None:
        super().step()
        self.steps += 1

    def read(self, sensor: str, out: npt.NDArray[np.float32]) -> bool:
        if sensor == "co2" and 100 <= self.steps < 160:
            out.fill(np.nan)
            return True
        if sensor == "temperature" and 300 <= self.steps < 330:
            return False
        if sensor == "clock" and 500 <= self.steps < 520:
            return False
        return super().read(sensor, out)


def test_keeps_running_through_dropouts_and_reports_each_once(model: Model) -> None:
    sim = FlakyHouse(start_hour=0.0, dropout_per_h=0.0)
    sim.reset(10_004)
    plugin = SmartHomePlugin()
    res = run_lockstep(plugin, sim, duration_s=7 * 3600.0, rate_hz=10.0, model=model)
    assert res.ticks == pytest.approx(7 * 3600 / sim.dt, abs=1)
    drops = [e.data["sensor"] for e in res.events if e.kind == "sensor_dropout"]
    assert sorted(drops) == ["clock", "co2", "temperature"]
    rows = np.asarray(res.telemetry)
    assert np.isfinite(rows).all()
    assert rows[-1, SmartHomePlugin.telemetry_fields.index("sensor_outages")] == 3
    assert np.isfinite(plugin.rooms.heat).all() and np.isfinite(plugin.rooms.vent).all()
    # The model kept forecasting after the clock came back: one inference per 5-minute bin.
    assert plugin.inferences == pytest.approx(7 * 12, abs=6)


def test_random_dropouts_never_stop_the_loop(model: Model) -> None:
    sim = _house(10_005, dropout_per_h=20.0)
    res = run_lockstep(SmartHomePlugin(), sim, duration_s=6 * 3600.0, rate_hz=10.0, model=model)
    drops = [e for e in res.events if e.kind == "sensor_dropout"]
    assert len(drops) >= 0.5 * sim.dropouts > 0
    assert np.isfinite(np.asarray(res.telemetry)).all()


def test_params_apply_between_ticks() -> None:
    sim = _house(10_006)
    plugin = SmartHomePlugin()
    seen: list[float] = []
    empty: dict[str, dict[str, list[Any]]] = {
        room: {"weekday": [], "weekend": []} for room in ("living", "kitchen", "bedroom")
    }
    params = {"control": "schedule", "schedule": empty, "setback_heat": 15.0}

    def on_tick(s: Any, _now: int) -> None:
        seen.append(float(s._cmd["heat_setpoint"][0, 0]))
        if len(seen) == 200:
            plugin.apply_params(Params.model_validate({**params, "setback_heat": 12.0}))

    run_lockstep(plugin, sim, duration_s=400 * sim.dt, rate_hz=10.0, params=params, on_tick=on_tick)
    assert seen[10:200] == [15.0] * 190
    assert seen[210:] == [12.0] * len(seen[210:])


def test_rejects_params_that_make_no_sense() -> None:
    with pytest.raises(ValueError, match="demand_low"):
        Params(demand_low=0.6, demand_high=0.5)
    with pytest.raises(ValueError, match="unknown rooms"):
        Params.model_validate({"schedule": {"garage": {"weekday": [[8, 9]]}}})
    with pytest.raises(ValueError):
        Params.model_validate({"schedule": {"living": {"weekday": [[9, 8]]}}})
