"""When appliances switch on and faults strike: schedulers that emit activations chunk by chunk.

Every scheduler owns its own random stream (spawned from the episode seed), so the trajectory
depends only on the seed, never on how the caller steps the world.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

import numpy as np

from sim.energy import appliances as ap

Rng = np.random.Generator
ProfileFn = Callable[[Rng, ap.House], np.ndarray]

FAULT_KINDS = ("spike", "compressor_failure", "standby_creep")
"""Injected faults the detector is scored on (sensor dropouts are reported, not scored)."""


class Activation(NamedTuple):
    """A power profile added to one circuit from absolute second `start` on."""

    start: int
    circuit: int
    profile: np.ndarray


class Scheduler(Protocol):
    """Anything that adds its activations up to a time."""

    def fill(self, until: int, out: list[Activation]) -> None:
        """Append activations starting before `until`."""


@dataclass(frozen=True, slots=True)
class Fault:
    """One injected fault: kind, [start, end) in simulated seconds, size, ramp time."""

    kind: str
    start: float
    end: float
    magnitude_w: float
    rise_s: float = 0.0


@dataclass(frozen=True, slots=True)
class Dropout:
    """The mains sensor is silent (`nan` False) or reads NaN (`nan` True) over [start, end)."""

    start: int
    end: int
    nan: bool


def hour_of_day(start_hour: float, t: float) -> int:
    """Hour 0..23 at simulated second `t` of an episode that began at `start_hour`."""
    return int(start_hour + t / 3600.0) % 24


class PoissonAppliance:
    """Switched on at random (time-of-day weighted, thinned Poisson), never twice at once."""

    def __init__(
        self, rng: Rng, house: ap.House, circuit: int, rate_h: float, fn: ProfileFn,
        start_hour: float, daily: np.ndarray = ap.DAILY,
    ) -> None:  # fmt: skip
        self._rng, self._house, self._circuit, self._fn = rng, house, circuit, fn
        self._start_hour, self._daily = start_hour, daily
        self._rate_max_s = rate_h * float(daily.max()) / 3600.0
        self._next = self._gap()

    def _gap(self) -> float:
        return float(self._rng.exponential(1.0 / self._rate_max_s)) if self._rate_max_s else 1e18

    def fill(self, until: int, out: list[Activation]) -> None:
        """Append activations starting before `until`."""
        while self._next < until:
            t = self._next
            weight = self._daily[hour_of_day(self._start_hour, t)] / self._daily.max()
            if self._rng.random() < weight:
                profile = self._fn(self._rng, self._house)
                out.append(Activation(int(t), self._circuit, profile))
                t += len(profile)
            self._next = t + self._gap()


@dataclass
class FridgeCompressor:
    """Fridge cycling on its thermostat; a requested failure turns runs into stalled starts."""

    rng: Rng
    house: ap.House
    faults: list[Fault]
    requests: list[float] = field(default_factory=list)  # failure onsets, ascending
    _next: float = -1.0

    def fill(self, until: int, out: list[Activation]) -> None:
        """Append compressor runs (or failed attempts) starting before `until`."""
        if self._next < 0:
            self._next = self.rng.uniform(0, self.house.fridge_off_s)
        while self._next < until:
            t = self._next
            if self.requests and self.requests[0] <= t:
                self.requests.pop(0)
                self._next = self._fail(t, until, out)
                continue
            profile = ap.fridge_cycle(self.rng, self.house)
            out.append(Activation(int(t), ap.FRIDGE, profile))
            self._next = t + len(profile) + self.house.fridge_off_s * self.rng.uniform(0.8, 1.2)

    def _fail(self, t: float, until: int, out: list[Activation]) -> float:
        # The whole failure is emitted at once; it may run past `until`, which is fine because
        # activations carry over between chunks.
        end = t + self.rng.uniform(1200, 3600)
        first = t
        peak = 0.0
        while t < end:
            profile = ap.locked_rotor_attempt(self.rng, self.house)
            out.append(Activation(int(t), ap.FRIDGE, profile))
            peak = max(peak, float(profile.max()))
            t += len(profile) + self.rng.uniform(45, 150)
        self.faults.append(Fault("compressor_failure", float(int(first)), end, peak))
        return end + self.rng.uniform(0, self.house.fridge_off_s)


class HeatPump:
    """Runs and pauses by heating demand; nothing when the house has none."""

    def __init__(self, rng: Rng, house: ap.House) -> None:
        self._rng, self._house = rng, house
        self._next = rng.uniform(0, 1800) if house.heat_pump_w > 0 else 1e18

    def fill(self, until: int, out: list[Activation]) -> None:
        """Append heat pump runs starting before `until`."""
        while self._next < until:
            profile = ap.heat_pump_run(self._rng, self._house)
            out.append(Activation(int(self._next), ap.HEAT_PUMP, profile))
            pause = self._rng.uniform(600, 3600) * (1.2 - self._house.heating)
            self._next += len(profile) + pause


EV_DAILY = np.array([0.3] * 6 + [0.1] * 11 + [1.0] * 6 + [0.5])
"""EV plug-in weight by hour: mostly evenings."""


@dataclass
class FaultInjector:
    """Faults at a mean rate, never overlapping, each kind equally likely."""

    rng: Rng
    house: ap.House
    rate_h: float
    kinds: tuple[str, ...]
    fridge: FridgeCompressor
    faults: list[Fault]
    _next: float = -1.0

    def fill(self, until: int, out: list[Activation]) -> None:
        """Append fault activations (and fridge failure requests) starting before `until`."""
        if self.rate_h <= 0 or not self.kinds:
            return
        if self._next < 0:
            self._next = self._gap(120.0)
        while self._next < until:
            t = self._next
            kind = self.kinds[int(self.rng.integers(len(self.kinds)))]
            if kind == "spike":
                profile = ap.spike(self.rng, self.house)
                out.append(Activation(int(t), ap.OTHER, profile))
                self.faults.append(Fault(kind, int(t), int(t) + len(profile), float(profile.max())))
                busy_until = t + len(profile)
            elif kind == "standby_creep":
                n = int(self.rng.uniform(1800, 5400))
                profile = ap.standby_creep(self.rng, n)
                out.append(Activation(int(t), ap.STANDBY, profile))
                rise = float(np.argmax(profile >= profile[-1]))
                self.faults.append(Fault(kind, int(t), int(t) + n, float(profile[-1]), rise))
                busy_until = t + n
            else:
                self.fridge.requests.append(t)
                # The failure starts at the fridge's next start (within one off period).
                busy_until = t + self.house.fridge_off_s * 1.2 + 3600
            self._next = busy_until + self._gap(300.0)

    def _gap(self, minimum: float) -> float:
        return minimum + float(self.rng.exponential(3600.0 / self.rate_h))


@dataclass
class DropoutInjector:
    """Sensor dropouts at a mean rate: silent (no reading) or NaN readings, 5-90 s each."""

    rng: Rng
    rate_h: float
    dropouts: list[Dropout]
    _next: float = -1.0

    def fill(self, until: int) -> None:
        """Schedule dropouts starting before `until`."""
        if self.rate_h <= 0:
            return
        if self._next < 0:
            self._next = 60.0 + self.rng.exponential(3600.0 / self.rate_h)
        while self._next < until:
            start = int(self._next)
            end = start + int(self.rng.uniform(5, 90))
            self.dropouts.append(Dropout(start, end, bool(self.rng.random() < 0.5)))
            self._next = end + 30.0 + self.rng.exponential(3600.0 / self.rate_h)
