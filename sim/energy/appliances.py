"""Appliance and fault power signatures at 1 s resolution: each returns a profile in watts."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

Rng = np.random.Generator
Profile = np.ndarray

CIRCUITS = ("standby", "fridge", "kitchen", "laundry", "heat_pump", "ev", "other")
"""Per-circuit sub-meters of the house; mains is their sum (plus meter noise)."""
STANDBY, FRIDGE, KITCHEN, LAUNDRY, HEAT_PUMP, EV, OTHER = range(len(CIRCUITS))

# Relative activity by hour of day: quiet nights, morning and evening peaks.
DAILY = np.array(
    [0.1, 0.1, 0.1, 0.1, 0.1, 0.3, 1.2, 1.6, 1.3, 0.8, 0.7, 0.8,
     1.0, 0.8, 0.6, 0.6, 0.8, 1.4, 1.8, 1.6, 1.3, 0.9, 0.5, 0.2]
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class House:
    """The appliances of one household, drawn once per episode from the seed."""

    standby_w: float
    fridge_w: float
    fridge_on_s: float
    fridge_off_s: float
    kettle_w: float
    heat_pump_w: float  # 0: no heat pump
    heating: float  # 0..1 heating demand (season)
    ev_w: float  # 0: no EV

    @staticmethod
    def draw(rng: Rng, *, heat_pump: bool | None, ev: bool | None) -> House:
        """A plausible household; `heat_pump`/`ev` force presence, None draws it."""
        has_hp = rng.random() < 0.7 if heat_pump is None else heat_pump
        has_ev = rng.random() < 0.5 if ev is None else ev
        return House(
            standby_w=rng.uniform(40, 150),
            fridge_w=rng.uniform(80, 160),
            fridge_on_s=rng.uniform(600, 1200),
            fridge_off_s=rng.uniform(1200, 2400),
            kettle_w=rng.uniform(1800, 3000),
            heat_pump_w=rng.uniform(1200, 3000) if has_hp else 0.0,
            heating=rng.uniform(0.2, 1.0),
            ev_w=float(rng.choice([3700.0, 7400.0, 11000.0])) if has_ev else 0.0,
        )


def _ramp(n: int, rise: int) -> Profile:
    """0..1 soft start over `rise` samples, then flat."""
    ramp: Profile = np.minimum(1.0, (np.arange(n) + 1.0) / max(rise, 1))
    return ramp


def fridge_cycle(rng: Rng, house: House) -> Profile:
    """One compressor run: 1 s inrush, then a slowly falling running draw."""
    n = int(house.fridge_on_s * rng.uniform(0.8, 1.2))
    p = house.fridge_w * (1.05 - 0.1 * np.arange(n) / n) + rng.normal(0, 1.5, n)
    p[0] = house.fridge_w * rng.uniform(4.0, 6.0)
    return p


def locked_rotor_attempt(rng: Rng, house: House) -> Profile:
    """A failed compressor start: locked-rotor draw until the overload protector trips."""
    n = int(rng.integers(3, 11))
    return house.fridge_w * rng.uniform(5.0, 8.0) * rng.uniform(0.95, 1.05, n)


def kettle(rng: Rng, house: House) -> Profile:
    """Resistive element: constant, sagging a little as it heats."""
    n = int(rng.uniform(90, 240))
    return np.asarray(house.kettle_w * (1.0 - 0.03 * np.arange(n) / n) * _ramp(n, 2))


def microwave(rng: Rng, house: House) -> Profile:
    """Magnetron at full power or duty-cycled on a 30 s period over the fan's draw."""
    n = int(rng.uniform(30, 400))
    full = rng.uniform(1000, 1300)
    if rng.random() < 0.6:
        return np.full(n, full)
    duty = rng.uniform(0.3, 0.7)
    on = (np.arange(n) % 30) < 30 * duty
    return np.where(on, full, 80.0)


def toaster(rng: Rng, house: House) -> Profile:
    """Resistive, a few minutes."""
    return np.full(int(rng.uniform(120, 300)), rng.uniform(800, 1500))


def oven(rng: Rng, house: House) -> Profile:
    """Preheat at full power, then thermostat cycling."""
    p_w = rng.uniform(2000, 3000)
    parts = [np.full(int(rng.uniform(480, 900)), p_w)]
    for _ in range(int(rng.uniform(10, 25))):
        parts.append(np.full(int(rng.uniform(40, 120)), p_w))
        parts.append(np.full(int(rng.uniform(60, 180)), 30.0))  # fan and light
    return np.concatenate(parts)


def washing_machine(rng: Rng, house: House) -> Profile:
    """Fill, heat, tumble (motor agitating on and off), spin."""
    heat = rng.uniform(1800, 2200)
    motor = rng.uniform(150, 300)
    tumble_n = int(rng.uniform(1800, 3600))
    period = int(rng.uniform(12, 20))
    tumble = np.where((np.arange(tumble_n) % period) < period * 0.6, motor, 15.0)
    spin_n = int(rng.uniform(300, 600))
    spin = rng.uniform(300, 600) * _ramp(spin_n, 60)
    return np.concatenate(
        [np.full(180, 10.0), np.full(int(rng.uniform(600, 1200)), heat), tumble, spin]
    )


def dishwasher(rng: Rng, house: House) -> Profile:
    """Heat, wash, heat again, dry."""
    heat = rng.uniform(1800, 2200)
    return np.concatenate(
        [
            np.full(int(rng.uniform(600, 900)), heat),
            np.full(int(rng.uniform(1800, 2700)), rng.uniform(100, 200)),
            np.full(int(rng.uniform(400, 700)), heat),
            np.full(int(rng.uniform(900, 1500)), 10.0),
        ]
    )


def lights_tv(rng: Rng, house: House) -> Profile:
    """A step that lasts: lights, TV, a console."""
    return np.full(int(rng.uniform(600, 10800)), rng.uniform(20, 250))


def computer(rng: Rng, house: House) -> Profile:
    """Fluctuating load of a desktop."""
    n = int(rng.uniform(1800, 10800))
    return rng.uniform(60, 200) + np.abs(rng.normal(0, 15, n))


def vacuum(rng: Rng, house: House) -> Profile:
    """Universal motor with a 1 s start surge."""
    n = int(rng.uniform(300, 1200))
    p = np.full(n, rng.uniform(800, 1500))
    p[0] *= 1.8
    return p


def hair_dryer(rng: Rng, house: House) -> Profile:
    """A few minutes on, with short pauses."""
    n = int(rng.uniform(120, 600))
    on = rng.random(n // 10 + 1) > 0.15
    return np.repeat(on, 10)[:n] * rng.uniform(1000, 2000)


# (name, circuit, base rate per hour at activity 1, profile)
POISSON_APPLIANCES = (
    ("kettle", KITCHEN, 0.6, kettle),
    ("microwave", KITCHEN, 0.3, microwave),
    ("toaster", KITCHEN, 0.15, toaster),
    ("oven", KITCHEN, 0.06, oven),
    ("dishwasher", KITCHEN, 0.05, dishwasher),
    ("washing_machine", LAUNDRY, 0.07, washing_machine),
    ("lights_tv", OTHER, 0.8, lights_tv),
    ("computer", OTHER, 0.15, computer),
    ("vacuum", OTHER, 0.05, vacuum),
    ("hair_dryer", OTHER, 0.08, hair_dryer),
)


def heat_pump_run(rng: Rng, house: House) -> Profile:
    """Inverter soft start over minutes, modulating run, soft stop."""
    n = int(rng.uniform(1200, 5400) * (0.5 + house.heating))
    p_run = house.heat_pump_w * rng.uniform(0.5, 1.0)
    t = np.arange(n)
    mod = 1.0 + 0.08 * np.sin(2 * np.pi * t / rng.uniform(300, 900) + rng.uniform(0, 6.3))
    stop = np.minimum(1.0, (n - t) / 30.0)
    shaped = p_run * mod * _ramp(n, int(rng.uniform(60, 180))) * stop
    return np.asarray(shaped + rng.normal(0, 10, n))


def ev_charge(rng: Rng, house: House) -> Profile:
    """Constant current, then a constant-voltage taper over the last quarter hour."""
    n = int(rng.uniform(3600, 4 * 3600))
    t = np.arange(n)
    taper = np.where(t > n - 900, np.exp(-(t - (n - 900)) / 400.0), 1.0)
    return house.ev_w * _ramp(n, 10) * np.maximum(taper, 0.1)


def spike(rng: Rng, house: House) -> Profile:
    """Fault: a 1-3 s surge (arcing, a failing power supply) well above any inrush."""
    n = int(rng.integers(1, 4))
    return rng.uniform(1000, 4000) * rng.uniform(0.6, 1.0, n)


def standby_creep(rng: Rng, duration_s: int) -> Profile:
    """Fault: standby draw ramping up over 5-20 min and staying up (a device not sleeping)."""
    rise = rng.uniform(300, 1200)
    profile: Profile = rng.uniform(80, 300) * np.minimum(1.0, np.arange(duration_s) / rise)
    return profile
