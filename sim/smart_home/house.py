"""A batch of houses stepped together: thermal RC rooms, occupants, CO2, light, windows.

One `Houses` holds `n` independent households with the same four-room layout, so training data
for many households costs about as much per step as one house (numpy overhead dominates at
this size). The `Simulator` seam uses a batch of one (sim/smart_home/world.py).

Physics per room, explicit Euler at `DT` = 30 s (every time constant is minutes or more):
- air node (air + furniture) and a heavy mass node (walls, floor), each losing heat outdoors;
- heat from the HVAC unit (modulating heat pump held to its heating/cooling setpoints),
  occupants, lights, cooking, sun through the windows, and neighbouring rooms;
- air exchange by infiltration, mechanical ventilation (70 % heat recovery) and open windows,
  which also carries CO2 out; occupants breathe CO2 in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from sim.smart_home.schedule import AWAY, KITCHEN, MAX_SEGMENTS, Profile, person_day

ROOMS = ("living", "kitchen", "bedroom", "office")
N_ROOMS = len(ROOMS)
MAX_PEOPLE = 4
DT = 30.0
AIR_J_PER_M3K = 1206.0
CO2_OUTDOOR = 420.0
# Rooms sharing a wall: living-kitchen, living-bedroom, living-office, kitchen-office.
_WALLS = ((0, 1), (0, 2), (0, 3), (1, 3))

_AR = math.exp(-DT / 21600.0)
_AR_NOISE = math.sqrt(1.0 - _AR * _AR)

F = npt.NDArray[np.float64]
B = npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class Climate:
    """Outdoor conditions of an episode: daily mean and swing of temperature, cloudiness."""

    mean_c: tuple[float, float] = (-5.0, 27.0)
    swing_c: tuple[float, float] = (3.0, 8.0)
    clear_sky: tuple[float, float] = (0.2, 1.0)


@dataclass(frozen=True, slots=True)
class Behaviour:
    """How often occupants open windows, and the comfort band the accounting uses."""

    window_per_h: float = 0.15
    window_open_min: float = 15.0
    comfort_low: float = 20.0
    comfort_high: float = 24.0


class Houses:
    """`n` households stepped in lockstep; every array is (n, rooms) or (n,)."""

    def __init__(
        self,
        n: int,
        seed: int,
        *,
        start_hour: float = 0.0,
        climate: Climate | None = None,
        behaviour: Behaviour | None = None,
    ) -> None:
        self.n = n
        self.rng = np.random.default_rng(seed)
        self.climate = climate or Climate()
        self.behaviour = behaviour or Behaviour()
        self.t = 0.0
        self.start_hour = start_hour
        self._draw_house()
        self._draw_people()
        self._init_state()
        self._day = -1
        self._advance_day()
        self._refresh_outputs()

    # --- episode set-up -------------------------------------------------------------------
    def _draw_house(self) -> None:
        rng, n, r = self.rng, self.n, N_ROOMS

        def jitter(*base: float) -> F:
            return np.asarray(base) * rng.uniform(0.85, 1.15, (n, r))

        self.c_air = jitter(8e5, 7e5, 6e5, 6e5)
        self.c_mass = jitter(1.2e7, 1.0e7, 9e6, 8e6)
        self.h_am = jitter(600.0, 500.0, 450.0, 450.0)
        self.ua_air = jitter(40.0, 30.0, 28.0, 30.0)
        self.ua_mass = jitter(28.0, 22.0, 20.0, 20.0)
        self.volume = jitter(60.0, 35.0, 40.0, 30.0)
        self.solar_w = jitter(700.0, 300.0, 250.0, 500.0)
        self.daylight_lux = jitter(900.0, 500.0, 400.0, 700.0)
        self.p_heat = np.full((n, r), 3500.0)
        self.p_cool = np.full((n, r), 3000.0)
        self.q_inf = self.volume * 0.3 / 3600.0
        self.cooking = np.where(np.arange(r) == KITCHEN, 400.0, 0.0)
        self.dt_air = DT / self.c_air
        self.dt_mass = DT / self.c_mass
        self.dt_vol = DT / self.volume
        lap = np.zeros((r, r))
        for a, b in _WALLS:
            lap[a, b] = lap[b, a] = 35.0
        self.lap = lap - np.diag(lap.sum(axis=1))
        c = self.climate
        self.t_mean = rng.uniform(*c.mean_c, n)
        self.t_swing = rng.uniform(*c.swing_c, n)
        self.clear_mean = rng.uniform(*c.clear_sky, n)
        self.start_dow = rng.integers(0, 7, n)

    def _draw_people(self) -> None:
        rng = self.rng
        sizes = rng.choice([1, 2, 2, 3, 3, 4], self.n)
        self.present = np.arange(MAX_PEOPLE)[None, :] < sizes[:, None]
        self.profiles = [[Profile.draw(rng) for _ in range(MAX_PEOPLE)] for _ in range(self.n)]
        shape = (self.n, MAX_PEOPLE, MAX_SEGMENTS)
        self.seg_start = np.full(shape, np.inf)
        self.seg_room = np.full(shape, AWAY, np.int64)
        self.seg_sleep = np.zeros(shape, np.bool_)
        self.seg_ptr = np.zeros((self.n, MAX_PEOPLE), np.int64)
        self._hp = np.indices((self.n, MAX_PEOPLE))
        self._next_move = 0.0

    def _init_state(self) -> None:
        rng, shape = self.rng, (self.n, N_ROOMS)
        # As if a thermostat had kept the house near 20 C (or under 26 C in summer) until now.
        base = np.clip(self.t_mean + 4.0, 20.5, 25.0)[:, None]
        self.t_mass = base + rng.normal(0.0, 0.5, shape)
        self.t_air = self.t_mass + rng.normal(0.0, 0.3, shape)
        self.co2 = CO2_OUTDOOR + rng.uniform(0.0, 300.0, shape)
        self.window = np.zeros(shape, np.bool_)
        self.weather = np.zeros(self.n)
        self.cloud = self.clear_mean.copy()
        self.heat_sp = np.full(shape, 20.0)
        self.cool_sp = np.full(shape, 25.0)
        self.lights = np.zeros(shape)
        self.vent = np.full(shape, 0.2)
        self._sum_hvac = np.zeros(shape)
        self._sum_light = np.zeros(shape)
        self._sum_fan = np.zeros(shape)
        self._sum_dev = np.zeros(shape)
        self._sum_occ = np.zeros(shape)
        self._sum_stuffy = np.zeros(shape)
        self._sum_dark = np.zeros(shape)
        self.t_out = self.t_mean + self.t_swing * np.sin(
            2 * np.pi * (self.hour_of_day - 9.0) / 24.0
        )
        self.daylight = np.zeros(shape)
        self.hvac_w = np.zeros(shape)
        self.light_w = np.zeros(shape)
        self.fan_w = np.zeros(shape)

    # --- clock ----------------------------------------------------------------------------
    @property
    def hours(self) -> float:
        """Hours since midnight of the first day."""
        return self.start_hour + self.t / 3600.0

    @property
    def hour_of_day(self) -> float:
        """Local time, 0-24."""
        return self.hours % 24.0

    @property
    def day_of_week(self) -> npt.NDArray[np.int64]:
        """0 = Monday ... 6 = Sunday, per household."""
        day = int(self.hours // 24.0)
        dow: npt.NDArray[np.int64] = (self.start_dow + day) % 7
        return dow

    def _advance_day(self) -> None:
        day = int(self.hours // 24.0)
        if day == self._day:
            return
        self._day = day
        weekend = self.day_of_week >= 5
        for h in range(self.n):
            for p in range(MAX_PEOPLE):
                if not self.present[h, p]:
                    continue
                starts, rooms, asleep = person_day(self.rng, self.profiles[h][p], bool(weekend[h]))
                k = len(starts)
                self.seg_start[h, p, :k] = starts
                self.seg_start[h, p, k:] = np.inf
                self.seg_room[h, p, :k] = rooms
                self.seg_sleep[h, p, :k] = asleep
        self.seg_ptr[:] = 0
        self._locate_people(force=True)

    def _locate_people(self, force: bool = False) -> None:
        hod = self.hour_of_day
        if hod < self._next_move and not force:
            return
        hh, pp = self._hp
        # Segments last at least five minutes, so one advance per step catches up.
        nxt = np.minimum(self.seg_ptr + 1, MAX_SEGMENTS - 1)
        self.seg_ptr += self.seg_start[hh, pp, nxt] <= hod
        ptr = self.seg_ptr
        self._next_move = float(self.seg_start[hh, pp, np.minimum(ptr + 1, MAX_SEGMENTS - 1)].min())
        room = np.where(self.present, self.seg_room[hh, pp, ptr], AWAY)
        asleep = self.seg_sleep[hh, pp, ptr]
        here = room[..., None] == np.arange(N_ROOMS)
        self.n_asleep = (here & asleep[..., None]).sum(axis=1).astype(np.float64)
        self.n_awake = (here & ~asleep[..., None]).sum(axis=1).astype(np.float64)
        self.occupied = (self.n_awake + self.n_asleep) > 0

    # --- commands -------------------------------------------------------------------------
    def command(self, heat_sp: F, cool_sp: F, lights: F, vent: F) -> None:
        """Set every room's setpoints (C), light level (0-1) and ventilation (0-1)."""
        np.minimum(np.maximum(heat_sp, 5.0), 30.0, out=self.heat_sp)
        # A cooling setpoint under the heating one would make the unit fight itself.
        np.minimum(np.maximum(cool_sp, 16.0), 35.0, out=self.cool_sp)
        np.maximum(self.cool_sp, self.heat_sp + 0.5, out=self.cool_sp)
        np.minimum(np.maximum(lights, 0.0), 1.0, out=self.lights)
        np.minimum(np.maximum(vent, 0.0), 1.0, out=self.vent)

    # --- physics --------------------------------------------------------------------------
    def step(self) -> None:
        """Advance every household by DT seconds."""
        self.t += DT
        self._advance_day()
        self._locate_people()
        hod = self.hour_of_day
        z = self.rng.standard_normal((2, self.n))
        # Weather: AR(1) deviations around the daily sinusoid (6 h memory), drifting clouds.
        self.weather = _AR * self.weather + _AR_NOISE * 1.5 * z[0]
        self.cloud = np.minimum(
            np.maximum(_AR * self.cloud + (1 - _AR) * self.clear_mean + 0.01 * z[1], 0.05), 1.0
        )
        swing = math.sin(2 * math.pi * (hod - 9.0) / 24.0)
        self.t_out = self.t_mean + self.t_swing * swing + self.weather
        sun = (max(0.0, math.sin(math.pi * (hod - 6.5) / 13.0)) * self.cloud)[:, None]
        self.daylight = sun * self.daylight_lux
        # Air flows (m3/s): infiltration 0.3 ACH, ventilation 40 l/s at full, open window 80 l/s.
        q_vent = 0.04 * self.vent
        q_win = 0.08 * self.window
        t_air, t_out = self.t_air, self.t_out[:, None]
        q_heat = np.minimum(np.maximum(5000.0 * (self.heat_sp - t_air), 0.0), self.p_heat)
        q_cool = np.minimum(np.maximum(5000.0 * (t_air - self.cool_sp), 0.0), self.p_cool)
        awake = self.n_awake
        gains = (
            100.0 * awake
            + 70.0 * self.n_asleep
            + 60.0 * self.lights
            + self.cooking * (awake > 0)
            + sun * self.solar_w
            + q_heat
            - q_cool
        )
        ua_air = self.ua_air + AIR_J_PER_M3K * (0.3 * q_vent + q_win)
        to_mass = self.h_am * (t_air - self.t_mass)
        loss_air = ua_air * (t_air - t_out)
        loss_mass = self.ua_mass * (self.t_mass - t_out)
        # Bookkept per step for the energy balance (stored heat change = DT * (in - out)).
        self.heat_in_w = gains
        self.heat_out_w = loss_air + loss_mass
        d_air = gains - to_mass - loss_air + t_air @ self.lap
        self.t_mass = self.t_mass + self.dt_mass * (to_mass - loss_mass)
        self.t_air = t_air + self.dt_air * d_air
        # CO2 (ppm): 18 l/h per person awake, 12.6 l/h asleep, washed out by the air flows.
        breath = 5.0 * awake + 3.5 * self.n_asleep
        flow = self.q_inf + q_vent + q_win
        self.co2 = self.co2 + self.dt_vol * (breath - flow * (self.co2 - CO2_OUTDOOR))
        self.hvac_w = q_heat / 3.2 + q_cool / 3.0
        self.light_w = 60.0 * self.lights
        self.fan_w = 25.0 * self.vent
        self._windows()
        self._account()
        self._refresh_outputs()

    @property
    def stored_heat_j(self) -> F:
        """Heat held by each household's air and mass above 0 C (J), for energy balances."""
        out: F = (self.c_air * self.t_air + self.c_mass * self.t_mass).sum(1)
        return out

    def _windows(self) -> None:
        # People open windows when it is warm or stuffy, and mostly shut them before leaving.
        b = self.behaviour
        urge = 1.0 + 3.0 * ((self.t_air > 24.5) & (self.t_out[:, None] < self.t_air))
        urge += 2.0 * (self.co2 > 1200.0)
        p_open = (self.n_awake > 0) * urge * (b.window_per_h * DT / 3600.0)
        p_close = np.where(self.occupied, DT / (60.0 * b.window_open_min), 0.1)
        u = self.rng.random((self.n, N_ROOMS))
        self.window = np.where(self.window, u >= p_close, u < p_open)

    def _account(self) -> None:
        # Per-room step sums only (cheap); the totals below scale them to hours and kWh.
        self._sum_hvac += self.hvac_w
        self._sum_light += self.light_w
        self._sum_fan += self.fan_w
        b = self.behaviour
        # Comfort counts while someone is in the room and its window is shut (an open window is
        # the occupant's own choice of temperature).
        dev = np.maximum(b.comfort_low - self.t_air, 0.0)
        dev += np.maximum(self.t_air - b.comfort_high, 0.0)
        self._sum_dev += dev * (self.occupied > self.window)
        self._sum_occ += self.occupied
        self._sum_stuffy += self.occupied & (self.co2 > 1000.0)
        self._sum_dark += (self.n_awake > 0) & (self.daylight + 400.0 * self.lights < 250.0)

    @property
    def energy_kwh(self) -> F:
        """Electric energy so far per household: columns HVAC, lights, fans."""
        sums = [self._sum_hvac.sum(1), self._sum_light.sum(1), self._sum_fan.sum(1)]
        return np.stack(sums, axis=1) * (DT / 3.6e6)

    @property
    def discomfort_kh(self) -> F:
        """Degree-hours outside the comfort band in occupied rooms with shut windows."""
        out: F = self._sum_dev.sum(1) * (DT / 3600.0)
        return out

    @property
    def occupied_h(self) -> F:
        """Room-hours with someone in the room."""
        out: F = self._sum_occ.sum(1) * (DT / 3600.0)
        return out

    @property
    def stuffy_h(self) -> F:
        """Occupied room-hours with CO2 above 1000 ppm."""
        out: F = self._sum_stuffy.sum(1) * (DT / 3600.0)
        return out

    @property
    def dark_h(self) -> F:
        """Room-hours with someone awake under 250 lux."""
        out: F = self._sum_dark.sum(1) * (DT / 3600.0)
        return out

    def _refresh_outputs(self) -> None:
        """Sensor readings of the current state (noise drawn here, so reads are repeatable)."""
        shape = (self.n, N_ROOMS)
        z = self.rng.standard_normal((3, *shape))
        # A PIR sees an awake person move in half of the 30 s steps, a sleeper rarely.
        p_still = (0.5**self.n_awake) * (0.99**self.n_asleep) * 0.999
        self.s_motion = (self.rng.random(shape) >= p_still).astype(np.float64)
        self.s_temp = np.round(self.t_air + 0.05 * z[0], 1)
        self.s_co2 = np.round(self.co2 + 15.0 * z[1])
        self.s_light = np.maximum(self.daylight + 400.0 * self.lights + 5.0 * z[2], 0.0)
        self.s_power = self.hvac_w + self.light_w + self.fan_w
