"""The household power simulator: deterministic, physically sane, faults where it says."""

from __future__ import annotations

import numpy as np
import pytest

from sim.energy import CIRCUITS, HouseholdPower
from sim.energy.appliances import FRIDGE, STANDBY
from sim.energy.dataset import BLOCK, FINE, forward_fill, labels, windows
from sim.energy.metrics import alarms_from_scores, score_alarms
from sim.energy.schedule import Fault

DAY = 24 * 3600


def world(seed: int, **kwargs: object) -> HouseholdPower:
    sim = HouseholdPower(**kwargs)  # type: ignore[arg-type]
    sim.reset(seed)
    return sim


def test_same_seed_same_trajectory_different_seed_different() -> None:
    a = world(5).record(7200)
    b = world(5).record(7200)
    c = world(6).record(7200)
    np.testing.assert_array_equal(a.mains, b.mains)
    np.testing.assert_array_equal(a.circuits, b.circuits)
    assert not np.array_equal(np.nan_to_num(a.mains), np.nan_to_num(c.mains))


def test_reset_replays_the_episode() -> None:
    sim = world(3)
    first = sim.record(3000)
    sim.reset(3)
    again = sim.record(3000)
    np.testing.assert_array_equal(first.mains, again.mains)
    assert sim.t == pytest.approx(3000.0)


def test_stepping_and_reading_match_record() -> None:
    recorded = world(11).record(2500)
    sim = world(11)
    out = np.zeros(1, np.float32)
    seen = np.empty(2500, np.float32)
    for i in range(2500):
        seen[i] = out[0] if sim.read("mains", out) else np.nan
        sim.step()
    np.testing.assert_array_equal(seen, recorded.mains)


def test_energy_balance_mains_is_the_sum_of_circuits() -> None:
    sim = world(21, fault_rate_per_h=2.0, dropout_rate_per_h=0.0, heat_pump=True, ev=True)
    rec = sim.record(DAY)
    load = rec.circuits.astype(np.float64).sum(axis=1)
    mains = rec.mains.astype(np.float64)
    # Meter noise is zero-mean: per second within a few sigma, over a day within 0.5 %.
    sigma = sim.noise_w + 0.003 * load
    assert np.all(np.abs(mains - load) < 6 * sigma + 1.0)
    assert abs(mains.sum() - load.sum()) / load.sum() < 0.005
    # Circuit energies add up to the metered energy.
    per_circuit_kwh = rec.circuits.astype(np.float64).sum(axis=0) / 3.6e6
    assert per_circuit_kwh.sum() == pytest.approx(mains.sum() / 3.6e6, rel=0.005)


def test_physically_sane_powers() -> None:
    sim = world(8, fault_rate_per_h=0.0, dropout_rate_per_h=0.0, heat_pump=True, ev=True)
    rec = sim.record(2 * DAY)
    assert np.all(rec.circuits >= 0.0)
    assert np.all(rec.mains >= 0.0)
    assert rec.mains.max() < 25_000.0  # a 100 A / 230 V main breaker holds
    assert rec.circuits[:, STANDBY].min() > 30.0
    fridge_on = rec.circuits[:, FRIDGE] > 20.0
    assert 0.15 < fridge_on.mean() < 0.6  # a thermostat duty cycle
    assert sim.faults == []


def test_fault_free_and_dropout_free_world_has_neither() -> None:
    sim = world(2, fault_rate_per_h=0.0, dropout_rate_per_h=0.0)
    rec = sim.record(6 * 3600)
    assert sim.faults == [] and sim.dropouts == []
    assert np.isfinite(rec.mains).all()


def test_faults_show_in_the_power_where_the_ground_truth_says() -> None:
    sim = world(4, fault_rate_per_h=4.0, dropout_rate_per_h=0.0)
    rec = sim.record(2 * DAY)
    faults = sim.faults_before(sim.t - 7200)
    kinds = {f.kind for f in faults}
    assert kinds == {"spike", "compressor_failure", "standby_creep"}
    for f in faults:
        s, e = int(f.start), int(np.ceil(f.end))
        if f.kind == "spike":
            assert rec.mains[s] - rec.mains[s - 1] > 500.0
        elif f.kind == "compressor_failure":
            fridge = rec.circuits[s:e, FRIDGE]
            assert fridge.max() > 4.0 * sim.house.fridge_w  # locked-rotor draw
            assert (fridge > 0.0).mean() < 0.25  # short attempts, no long run
        else:
            before = np.median(rec.circuits[s - 600 : s, STANDBY])
            late = np.median(rec.circuits[e - 300 : e, STANDBY])
            assert late - before > 0.8 * f.magnitude_w - 15.0
    assert [f.start for f in faults] == sorted(f.start for f in faults)


def test_dropouts_are_missing_or_nan_readings() -> None:
    sim = world(9, fault_rate_per_h=0.0, dropout_rate_per_h=6.0)
    out = np.zeros(1, np.float32)
    kinds: set[str] = set()
    for _ in range(4 * 3600):
        n = int(sim.t)
        active = [d for d in sim.dropouts if d.start <= n < d.end]
        ok = sim.read("mains", out)
        if not active:
            assert ok and np.isfinite(out[0])
        elif active[0].nan:
            assert ok and np.isnan(out[0])
            kinds.add("nan")
        else:
            assert not ok
            kinds.add("missing")
        sim.step()
    assert kinds == {"nan", "missing"}


def test_unknown_devices_and_fault_kinds_are_refused() -> None:
    from agent.errors import HalError

    sim = world(1)
    with pytest.raises(HalError, match="no sensor"):
        sim.read("gas", np.zeros(1, np.float32))
    with pytest.raises(HalError, match="no actuator"):
        sim.actuate("relay", np.zeros(1, np.float32))
    with pytest.raises(ValueError, match="unknown fault kinds"):
        HouseholdPower(fault_kinds=("meteor",))
    assert len(CIRCUITS) == HouseholdPower.sensors["circuits"].shape[0]


def test_windows_hold_last_value_and_pad_with_the_first() -> None:
    mains = np.arange(1.0, 301.0, dtype=np.float32)
    mains[100:110] = np.nan
    filled = forward_fill(mains)
    assert np.all(filled[100:110] == 100.0)
    x = windows(filled, np.array([0, 299]))
    assert np.all(x[0] == 1.0)  # nothing seen yet but the first reading
    np.testing.assert_array_equal(x[1, :FINE], filled[300 - FINE :])
    coarse = x[1, FINE:]
    assert coarse[-1] == filled[4 * BLOCK : 5 * BLOCK].min()  # block 4 ended at sample 299
    assert coarse[-6] == 1.0  # padding before the first block


def test_labels_and_scoring() -> None:
    faults = [Fault("spike", 100, 102, 2000.0), Fault("standby_creep", 1000, 3000, 150.0, 600.0)]
    y, w = labels(faults, 4000)
    assert y[100] == 1 and y[150] == 1 and w[200] == 0.0
    assert w[1100] == 0.0 and y[1500] == 3  # creep: ambiguous early ramp, then positive
    # 101: detects the spike; 1500: detects the creep (levelled off at 1600, deadline 2500);
    # 2800: a repeat during the creep, neither true nor false; 3500: false.
    score = score_alarms([101.0, 1500.0, 2800.0, 3500.0], faults)
    assert (score.faults, score.detected, score.alarms, score.false_alarms) == (2, 2, 4, 1)
    assert score.recall == 1.0 and score.precision == pytest.approx(2 / 3)
    assert score.delays_s == [1.0, 500.0]
    missed = score_alarms([200.0], faults[:1])  # after the spike's deadline, before its grace end
    assert (missed.detected, missed.false_alarms, missed.precision) == (0, 0, 0.0)
    late = score_alarms([101.0, 3950.0], [*faults, Fault("spike", 3900, 3901, 1e3)],
                        scored_until=3800.0)  # fmt: skip
    assert (late.faults, late.alarms) == (2, 1)


def test_alarm_twin_confirms_and_rearms() -> None:
    scores = np.array([0, 0.9, 0.9, 0.9, 0.1, 0.1, 0.9, 0.9, 0, 0, 0.9, 0.9], np.float32)
    valid = np.ones(len(scores), bool)
    fired = alarms_from_scores(scores, valid, threshold=0.5, release=0.2, confirm=2, rearm=2)
    assert fired == [2, 7, 11]
