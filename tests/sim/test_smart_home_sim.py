"""The smart home simulator: deterministic per seed, physically sane, sensors that drop out."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sim.smart_home import ROOMS, Houses, HouseSim
from sim.smart_home.eval import evaluate
from sim.smart_home.house import CO2_OUTDOOR, DT

BEDROOM = ROOMS.index("bedroom")


def _readings(sim: HouseSim) -> dict[str, np.ndarray]:
    out = {}
    for name, spec in sim.sensors.items():
        buf = np.zeros(spec.shape, np.float32)
        ok = sim.read(name, buf)
        out[name] = buf if ok else np.full(spec.shape, -1.0, np.float32)
    return out


def _run(seed: int, steps: int) -> list[dict[str, np.ndarray]]:
    sim = HouseSim()
    sim.reset(seed)
    trace = []
    for i in range(steps):
        # Commands vary over the run so the comparison covers the actuated paths too.
        sim.actuate("heat_setpoint", np.full(4, 18.0 + (i // 50) % 4, np.float32))
        sim.actuate("ventilation", np.full(4, 0.25 * ((i // 30) % 4), np.float32))
        sim.step()
        trace.append(_readings(sim))
    return trace


def test_same_seed_same_trajectory_other_seed_another() -> None:
    a, b, c = _run(3, 400), _run(3, 400), _run(4, 400)
    for ra, rb in zip(a, b, strict=True):
        for name in ra:
            np.testing.assert_array_equal(ra[name], rb[name], err_msg=name)
    assert any(
        not np.array_equal(ra["temperature"], rc["temperature"])
        for ra, rc in zip(a, c, strict=True)
    )


def test_reset_restarts_the_episode() -> None:
    sim = HouseSim()
    sim.reset(9)
    sim.step()
    first = _readings(sim)
    for _ in range(50):
        sim.step()
    sim.reset(9)
    sim.step()
    again = _readings(sim)
    for name in first:
        np.testing.assert_array_equal(first[name], again[name], err_msg=name)
    assert sim.t == DT


def test_energy_balance_holds_every_step() -> None:
    houses = Houses(16, seed=5)
    rng = np.random.default_rng(0)
    for _ in range(600):
        houses.command(
            rng.uniform(10, 25, (16, 4)),
            rng.uniform(20, 30, (16, 4)),
            rng.uniform(0, 1, (16, 4)),
            rng.uniform(0, 1, (16, 4)),
        )
        before = houses.stored_heat_j
        houses.step()
        # Heat moved between rooms cancels out; what is stored changes by what came in minus
        # what left to the outdoors.
        expected = DT * (houses.heat_in_w - houses.heat_out_w).sum(axis=1)
        np.testing.assert_allclose(houses.stored_heat_j - before, expected, rtol=1e-9, atol=1e-3)


def test_heating_warms_and_no_heating_cools_towards_outdoors() -> None:
    cold = Houses(8, seed=1)
    cold.t_mean[:] = -5.0
    warm = Houses(8, seed=1)
    warm.t_mean[:] = -5.0
    start = cold.t_air.copy()
    off = np.full((8, 4), 5.0)
    on = np.full((8, 4), 22.0)
    high, zero = np.full((8, 4), 35.0), np.zeros((8, 4))
    for _ in range(int(6 * 3600 / DT)):
        cold.command(off, high, zero, zero)
        warm.command(on, high, zero, zero)
        cold.step()
        warm.step()
    assert (warm.t_air > 21.0).all()
    assert (cold.t_air < start - 2.0).all()
    assert (cold.t_air < warm.t_air).all()
    assert (cold.t_air > cold.t_out[:, None]).all()  # still above outdoors, losing heat


def test_people_are_in_one_room_and_sleep_only_in_the_bedroom() -> None:
    houses = Houses(32, seed=2)
    sizes = houses.present.sum(axis=1)
    for _ in range(int(86400 / DT)):
        houses.step()
        inside = (houses.n_awake + houses.n_asleep).sum(axis=1)
        assert (inside <= sizes).all()
        sleepers = houses.n_asleep.copy()
        sleepers[:, BEDROOM] = 0
        assert not sleepers.any()
    assert houses.occupied_h.min() > 0.0


def test_states_stay_plausible_over_days_with_random_commands() -> None:
    houses = Houses(16, seed=11)
    rng = np.random.default_rng(1)
    for _ in range(int(1.5 * 86400 / DT)):
        houses.command(
            rng.uniform(5, 30, (16, 4)),
            rng.uniform(16, 35, (16, 4)),
            rng.uniform(0, 1, (16, 4)),
            rng.uniform(0, 1, (16, 4)),
        )
        houses.step()
        assert np.isfinite(houses.t_air).all()
        assert (houses.t_air > -15).all() and (houses.t_air < 50).all()
        assert (houses.co2 >= CO2_OUTDOOR - 1e-6).all() and (houses.co2 < 6000).all()
    assert (houses.energy_kwh >= 0).all()


def test_ventilation_clears_co2_of_sleepers() -> None:
    houses = Houses(4, seed=3, start_hour=0.0)
    heat, cool = np.full((4, 4), 20.0), np.full((4, 4), 26.0)
    lights = np.zeros((4, 4))
    for _ in range(int(3 * 3600 / DT)):  # midnight to 3 am: the household sleeps
        houses.command(heat, cool, lights, np.zeros((4, 4)))
        houses.step()
    stale = houses.co2[:, BEDROOM].copy()
    for _ in range(int(3600 / DT)):
        houses.command(heat, cool, lights, np.ones((4, 4)))
        houses.step()
    assert (stale > 1000).all()
    assert (houses.co2[:, BEDROOM] < stale - 300).all()


def test_metered_power_integrates_to_the_energy_accounted() -> None:
    sim = HouseSim(start_hour=0.0, dropout_per_h=0.0)
    sim.reset(21)
    buf = np.zeros(4, np.float32)
    metered = 0.0
    for _ in range(int(8 * 3600 / DT)):
        sim.step()
        assert sim.read("power", buf)
        metered += float(buf.astype(np.float64).sum()) * DT
    assert metered / 3.6e6 == pytest.approx(float(sim.house.energy_kwh[0].sum()), rel=1e-4)


def test_dropouts_return_false_or_nan_then_recover() -> None:
    sim = HouseSim(dropout_per_h=6.0)
    sim.reset(2)
    missing = nans = 0
    buf = np.zeros(4, np.float32)
    for _ in range(int(6 * 3600 / DT)):
        sim.step()
        for name in ("temperature", "co2", "motion"):
            ok = sim.read(name, buf)
            missing += not ok
            nans += bool(ok and np.isnan(buf).any())
    assert missing > 0 and nans > 0
    assert sim.dropouts >= 5
    sim.dropout_per_h = 0.0
    for _ in range(int(3600 / DT)):
        sim.step()
    assert sim.dropped is None


def test_clock_runs_in_local_hours_and_weekdays() -> None:
    sim = HouseSim(start_hour=23.0)
    sim.reset(0)
    clock = np.zeros(2, np.float32)
    sim.read("clock", clock)
    day0 = clock[1]
    for _ in range(int(2 * 3600 / DT)):
        sim.step()
    sim.read("clock", clock)
    assert clock[0] == pytest.approx(1.0, abs=DT / 3600)
    assert clock[1] == (day0 + 1) % 7


def test_non_finite_commands_are_ignored() -> None:
    sim = HouseSim()
    sim.reset(0)
    sim.actuate("heat_setpoint", np.full(4, 21.0, np.float32))
    sim.actuate("heat_setpoint", np.array([np.nan, 1, 2, 3], np.float32))
    sim.step()
    assert (sim.house.heat_sp == 21.0).all()


def test_quick_evaluation_reports_every_variant(tmp_path: Path) -> None:
    result = evaluate(episodes=1, quick=True, plot_dir=tmp_path)
    assert result["domain"] == "smart_home" and result["higher_is_better"] is False
    assert set(result["results"]) == {"baseline", "float", "int8_tflite", "int8_onnx"}
    assert all(v >= 0.0 for v in result["results"].values())
    assert result["seed"] >= 10_000 and result["episodes"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        f"smart_home_{v}.png" for v in ("baseline", "float", "int8_onnx", "int8_tflite")
    ]


def test_evaluation_refuses_training_seeds() -> None:
    with pytest.raises(ValueError, match="10000"):
        evaluate(episodes=1, seed=42, quick=True)
