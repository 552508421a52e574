"""A household's mains power, second by second, built from appliance signatures with faults."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import numpy.typing as npt

from agent.errors import HalError
from agent.hal.base import ActuatorSpec, SensorSpec
from agent.hal.simulator import Simulator
from sim.energy import appliances as ap
from sim.energy.schedule import (
    EV_DAILY,
    FAULT_KINDS,
    Activation,
    DropoutInjector,
    FaultInjector,
    FridgeCompressor,
    HeatPump,
    PoissonAppliance,
    Scheduler,
)
from sim.energy.schedule import Dropout as Dropout
from sim.energy.schedule import Fault as Fault

CHUNK = 600
"""Seconds rendered at once: stepping is then an index increment."""
MISSING, NAN_READING = 1, 2


@dataclass(frozen=True, slots=True)
class Recording:
    """What the meters showed over a stretch: mains reading, dropout flags, circuit truth."""

    t0: float
    mains: npt.NDArray[np.float32]
    """Meter reading in W; NaN where the sensor read NaN or had no reading."""
    dropout: npt.NDArray[np.int8]
    """0 fine, 1 no reading, 2 NaN reading."""
    circuits: npt.NDArray[np.float32]
    """True power per circuit (rows: seconds, columns: appliances.CIRCUITS); sums to the load."""


class HouseholdPower(Simulator):
    """Whole-house active power at 1 Hz: fridge, kitchen, laundry, heat pump, EV, standby.

    Faults (`spike`, `compressor_failure`, `standby_creep`) and sensor dropouts are injected at
    the given rates; `faults` and `dropouts` hold the ground truth. The defaults suit the live
    demo (a fault every few simulated minutes); evaluations pass rarer, realistic rates.
    """

    dt: ClassVar[float] = 1.0
    realtime_speed: ClassVar[float] = 50.0
    sensors: ClassVar[dict[str, SensorSpec]] = {
        "mains": SensorSpec((1,), "W", "whole-house active power, 1 Hz"),
        "circuits": SensorSpec(
            (len(ap.CIRCUITS),), "W", "per-circuit power: " + ",".join(ap.CIRCUITS)
        ),
    }
    actuators: ClassVar[dict[str, ActuatorSpec]] = {
        "alarm": ActuatorSpec((1,), "", "anomaly indicator: 1 while an anomaly is active"),
    }

    def __init__(
        self,
        *,
        fault_rate_per_h: float = 10.0,
        dropout_rate_per_h: float = 4.0,
        fault_kinds: tuple[str, ...] = FAULT_KINDS,
        activity: float = 1.0,
        noise_w: float = 3.0,
        start_hour: float | None = None,
        heat_pump: bool | None = None,
        ev: bool | None = None,
    ) -> None:
        unknown = set(fault_kinds) - set(FAULT_KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; known: {FAULT_KINDS}")
        self.fault_rate_per_h = fault_rate_per_h
        self.dropout_rate_per_h = dropout_rate_per_h
        self.fault_kinds = tuple(fault_kinds)
        self.activity = activity
        self.noise_w = noise_w
        self._start_hour_arg = start_hour
        self._heat_pump_arg = heat_pump
        self._ev_arg = ev
        self.alarm = 0.0
        self.reset(0)

    def reset(self, seed: int) -> None:
        """Draw a household and its schedules from `seed`; time restarts at 0."""
        streams = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(20)]
        house_rng, self._noise_rng, fridge_rng, hp_rng, fault_rng, drop_rng, ev_rng = streams[:7]
        self.house = ap.House.draw(house_rng, heat_pump=self._heat_pump_arg, ev=self._ev_arg)
        hour = self._start_hour_arg
        self.start_hour = float(house_rng.uniform(0, 24)) if hour is None else hour
        self.faults: list[Fault] = []
        self.dropouts: list[Dropout] = []
        fridge = FridgeCompressor(fridge_rng, self.house, self.faults)
        poisson = [
            PoissonAppliance(rng, self.house, circuit, rate * self.activity, fn, self.start_hour)
            for rng, (_, circuit, rate, fn) in zip(streams[7:], ap.POISSON_APPLIANCES, strict=False)
        ]
        ev_rate = 0.08 if self.house.ev_w > 0 else 0.0
        ev = PoissonAppliance(
            ev_rng, self.house, ap.EV, ev_rate, ap.ev_charge, self.start_hour, EV_DAILY
        )
        injector = FaultInjector(
            fault_rng, self.house, self.fault_rate_per_h, self.fault_kinds, fridge, self.faults
        )
        # The injector runs before the fridge so a failure request is seen by the same chunk.
        heat_pump = HeatPump(hp_rng, self.house)
        self._schedulers: list[Scheduler] = [injector, fridge, heat_pump, ev, *poisson]
        self._dropper = DropoutInjector(drop_rng, self.dropout_rate_per_h, self.dropouts)
        self._active: list[Activation] = []
        self._wander = 0.0
        self._drop_first = 0
        self._chunk_start = -CHUNK
        self._render_next()
        self._n = 0
        self.t = 0.0
        self.alarm = 0.0
        self._publish(0)

    def step(self) -> None:
        """Advance one second."""
        i = self._n - self._chunk_start + 1
        if i == CHUNK:
            self._render_next()
            i = 0
        self._n += 1
        self.t = self._n * self.dt
        self._publish(i)

    def read(self, sensor: str, out: npt.NDArray[np.float32]) -> bool:
        """Copy the current reading; False while the mains sensor is silent."""
        if sensor == "mains":
            if self._flag_now == MISSING:
                return False
            out[0] = self._mains_now
            return True
        if sensor == "circuits":
            np.copyto(out, self._circ_now)
            return True
        raise HalError(f"HouseholdPower has no sensor {sensor!r}")

    def actuate(self, actuator: str, value: npt.NDArray[np.float32]) -> None:
        """Set the anomaly indicator (kept for the live view; it changes nothing physical)."""
        if actuator != "alarm":
            raise HalError(f"HouseholdPower has no actuator {actuator!r}")
        self.alarm = float(value[0])

    def record(self, seconds: int) -> Recording:
        """Advance `seconds` steps at once, returning what `read` would have shown at each."""
        t0 = self.t
        parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        left = seconds
        while left > 0:
            i = self._n - self._chunk_start
            take = min(left, CHUNK - i)
            parts.append(
                (self._meter[i : i + take], self._drop[i : i + take], self._circ[i : i + take])
            )
            left -= take
            for _ in range(take):  # cheap: an index bump per step, a render per chunk
                self.step()
        mains = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, np.float32)
        drop = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0, np.int8)
        mains = np.where(drop == MISSING, np.float32(np.nan), mains).astype(np.float32)
        circ = (
            np.concatenate([p[2] for p in parts])
            if parts
            else np.zeros((0, len(ap.CIRCUITS)), np.float32)
        )
        return Recording(t0, mains, drop, circ)

    def faults_before(self, t: float) -> list[Fault]:
        """Ground truth: the faults that started before simulated second `t`, in start order."""
        return sorted((f for f in self.faults if f.start < t), key=lambda f: f.start)

    def _publish(self, i: int) -> None:
        # Scalars swapped in one go, so a reader on another thread never indexes a stale chunk.
        self._circ_now = self._circ[i]
        self._flag_now = int(self._drop[i])
        self._mains_now = float(self._meter[i])

    def _render_next(self) -> None:
        c0 = self._chunk_start + CHUNK
        c1 = c0 + CHUNK
        for scheduler in self._schedulers:
            scheduler.fill(c1, self._active)
        self._dropper.fill(c1)
        circ = np.zeros((CHUNK, len(ap.CIRCUITS)))
        keep: list[Activation] = []
        for act in self._active:
            lo, hi = act.start - c0, act.start - c0 + len(act.profile)
            if lo < CHUNK and hi > 0:
                a, b = max(lo, 0), min(hi, CHUNK)
                circ[a:b, act.circuit] += act.profile[a - lo : b - lo]
            if hi > CHUNK:
                keep.append(act)
        self._active = keep
        circ[:, ap.STANDBY] += self.house.standby_w + self._standby_wander()
        np.maximum(circ, 0.0, out=circ)
        load = circ.sum(axis=1)
        noise = self._noise_rng.normal(0.0, 1.0, CHUNK) * (self.noise_w + 0.003 * load)
        meter = np.maximum(load + noise, 0.0)
        drop = np.zeros(CHUNK, np.int8)
        while self._drop_first < len(self.dropouts) and self.dropouts[self._drop_first].end <= c0:
            self._drop_first += 1
        for d in self.dropouts[self._drop_first :]:
            if d.start < c1 and d.end > c0:
                flag = NAN_READING if d.nan else MISSING
                drop[max(d.start - c0, 0) : min(d.end - c0, CHUNK)] = flag
        meter[drop == NAN_READING] = np.nan
        self._circ = circ.astype(np.float32)
        self._meter = meter.astype(np.float32)
        self._drop = drop
        self._chunk_start = c0

    def _standby_wander(self) -> np.ndarray:
        # A slow mean-reverting walk of a few watts: chargers, routers, thermostats.
        knots = np.empty(CHUNK // 60 + 1)
        knots[0] = self._wander
        steps = self._noise_rng.normal(0.0, 2.0, len(knots) - 1)
        for j, s in enumerate(steps, 1):
            knots[j] = 0.9 * knots[j - 1] + s
        self._wander = float(knots[-1])
        return np.interp(np.arange(CHUNK), np.arange(len(knots)) * 60.0, knots)


REALISTIC_FAULT_RATE_PER_H = 1.0
"""Evaluation fault rate: real faults are rarer, but an episode must hold several to score."""
REALISTIC_DROPOUT_RATE_PER_H = 0.5


def make_world(
    seed: int,
    *,
    fault_rate_per_h: float = REALISTIC_FAULT_RATE_PER_H,
    dropout_rate_per_h: float = REALISTIC_DROPOUT_RATE_PER_H,
) -> HouseholdPower:
    """A world reset to `seed` for training or evaluation, its activity level varied by seed."""
    activity = float(np.random.default_rng([seed, 1]).uniform(0.6, 1.4))
    sim = HouseholdPower(
        fault_rate_per_h=fault_rate_per_h, dropout_rate_per_h=dropout_rate_per_h, activity=activity
    )
    sim.reset(seed)
    return sim
