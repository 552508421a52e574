"""Room control laws over preallocated per-room buffers; every update method allocates nothing.

`Rooms` turns occupancy (forecast probabilities or a fixed schedule) into heating and cooling
setpoints, CO2 readings into ventilation levels, and motion plus illuminance into lamp levels.
Each update also leaves boolean masks of what just changed, for the plugin's events.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from plugins.smart_home.config import ROOMS, Params

F32 = npt.NDArray[np.float32]
Mask = npt.NDArray[np.bool_]
HVAC_OFF_HEAT = 7.0
"""Frost protection only: what 'heating off' means for a room with an open window."""
HVAC_OFF_COOL = 35.0
LUX_PER_LEVEL = 400.0
"""Illuminance of a room's lamps at full level, for the lamp controller's gain."""


def _f(n: int, value: float = 0.0) -> F32:
    return np.full(n, value, np.float32)


def _b(n: int) -> Mask:
    return np.zeros(n, np.bool_)


class Rooms:
    """Setpoints, ventilation and lamp levels of every room, with their change masks."""

    def __init__(self, params: Params, rooms: int = len(ROOMS)) -> None:
        n = rooms
        self.n = n
        self.heat, self.cool = _f(n, params.comfort_low), _f(n, params.comfort_high)
        # Setpoints as decided at the last bin, before the per-tick open-window override.
        self._heat, self._cool = _f(n, params.comfort_low), _f(n, params.comfort_high)
        self.vent, self.lights = _f(n), _f(n)
        self.presence = _f(n)
        """P(in use now) per room (0/1 from a schedule)."""
        self.occupied, self.comfort = _b(n), _b(n)
        self.window_open, self.vent_on = _b(n), _b(n)
        # Change masks, refreshed by each update.
        self.comfort_started, self.comfort_ended = _b(n), _b(n)
        self.preheat_started, self.window_opened, self.vent_started = _b(n), _b(n), _b(n)
        self._prev_comfort, self._prev_window, self._prev_vent = _b(n), _b(n), _b(n)
        self._tmp, self._lit = _b(n), _b(n)
        self._demand, self._d_comfort, self._d_eco = _f(n), _f(n), _f(n)
        self._level, self._base, self._since = _f(n), _f(n), _f(n)
        self._last_motion = _f(n, np.nan)
        self._hour = np.zeros((), np.float32)
        self._zero = _f(n)
        self._off_heat, self._off_cool = _f(n, HVAC_OFF_HEAT), _f(n, HVAC_OFF_COOL)
        self.configure(params)

    def configure(self, p: Params) -> None:
        """Take new params (between ticks; allocates)."""
        n = self.n
        self.p = p
        self._heat_levels = (
            _f(n, p.setback_heat),
            _f(n, p.comfort_low + p.margin - p.eco_offset),
            _f(n, p.comfort_low + p.margin),
        )
        self._cool_levels = (
            _f(n, p.setback_cool),
            _f(n, p.comfort_high - p.margin + p.eco_offset),
            _f(n, p.comfort_high - p.margin),
        )
        self._vent_gain = 1.0 / (p.co2_on_ppm - p.co2_off_ppm)
        self._ramp_gain = 1.0 / (p.demand_high - p.demand_low)
        self._hold_h = p.light_hold_min / 60.0

    # --- heating and cooling ----------------------------------------------------------------
    def from_forecast(self, p_now: F32, p_30: F32, p_60: F32) -> None:
        """Setpoints slide from setback to comfort as the room's expected use rises.

        Demand is max(P(in use now), P(in use within 30 min)); between `demand_low` and
        `demand_high` the heating setpoint moves linearly from setback to comfort (cooling
        likewise), and P(in use within 60 min) holds at least the eco level the same way. A
        continuous map, not a threshold: a forecast that moves a little moves the setpoint a
        little, so an int8 model steers the house like its float original.
        """
        p = self.p
        np.greater(p_now, p.occupied_threshold, out=self.occupied)
        np.copyto(self.presence, p_now)
        np.maximum(p_now, p_30, out=self._demand)
        self._ramp(self._demand, self._d_comfort)
        self._ramp(p_60, self._d_eco)
        off_h, eco_h, on_h = self._heat_levels
        off_c, eco_c, on_c = self._cool_levels
        self._blend(off_h, on_h, self._d_comfort, self._heat)
        self._blend(off_h, eco_h, self._d_eco, self._level)
        np.maximum(self._heat, self._level, out=self._heat)
        self._blend(off_c, on_c, self._d_comfort, self._cool)
        self._blend(off_c, eco_c, self._d_eco, self._level)
        np.minimum(self._cool, self._level, out=self._cool)
        # Comfort on at full demand, off at none: the events' hysteresis comes for free.
        np.greater_equal(self._d_comfort, 1.0, out=self._tmp)
        np.logical_or(self.comfort, self._tmp, out=self.comfort)
        np.greater(self._d_comfort, 0.0, out=self._tmp)
        np.logical_and(self.comfort, self._tmp, out=self.comfort)
        self._changes()
        np.greater(self.comfort_started, self.occupied, out=self.preheat_started)

    def _ramp(self, prob: F32, out: F32) -> None:
        np.subtract(prob, self.p.demand_low, out=out)
        np.multiply(out, self._ramp_gain, out=out)
        np.clip(out, 0.0, 1.0, out=out)

    def _blend(self, lo: F32, hi: F32, weight: F32, out: F32) -> None:
        np.subtract(hi, lo, out=out)
        np.multiply(out, weight, out=out)
        np.add(out, lo, out=out)

    def from_schedule(self, scheduled: Mask) -> None:
        """Comfort inside the scheduled periods, setback outside: a classic thermostat."""
        np.copyto(self.occupied, scheduled)
        np.copyto(self.presence, scheduled)
        np.copyto(self.comfort, scheduled)
        off_h, _, on_h = self._heat_levels
        off_c, _, on_c = self._cool_levels
        np.copyto(self._heat, off_h)
        np.copyto(self._heat, on_h, where=scheduled)
        np.copyto(self._cool, off_c)
        np.copyto(self._cool, on_c, where=scheduled)
        self._changes()
        self.preheat_started.fill(False)

    def _changes(self) -> None:
        np.greater(self.comfort, self._prev_comfort, out=self.comfort_started)
        np.greater(self._prev_comfort, self.comfort, out=self.comfort_ended)
        np.copyto(self._prev_comfort, self.comfort)

    def window_override(self, window: F32) -> None:
        """Turn HVAC off in rooms with an open window (if enabled) and mark fresh openings."""
        np.greater(window, 0.5, out=self.window_open)
        np.greater(self.window_open, self._prev_window, out=self.window_opened)
        np.copyto(self._prev_window, self.window_open)
        np.copyto(self.heat, self._heat)
        np.copyto(self.cool, self._cool)
        if self.p.window_hvac_off:
            np.copyto(self.heat, self._off_heat, where=self.window_open)
            np.copyto(self.cool, self._off_cool, where=self.window_open)
        else:
            self.window_opened.fill(False)

    # --- ventilation ------------------------------------------------------------------------
    def demand_ventilation(self, co2: F32) -> None:
        """On above co2_on, off under co2_off, proportional in between; a trickle when in use.

        The trickle scales with P(in use now) rather than switching at a threshold.
        """
        p = self.p
        np.greater(co2, p.co2_on_ppm, out=self._tmp)
        np.logical_or(self.vent_on, self._tmp, out=self.vent_on)
        np.less(co2, p.co2_off_ppm, out=self._tmp)
        np.greater(self.vent_on, self._tmp, out=self.vent_on)
        np.subtract(co2, p.co2_off_ppm, out=self._level)
        np.multiply(self._level, self._vent_gain, out=self._level)
        np.clip(self._level, 0.3, 1.0, out=self.vent)
        np.multiply(self.presence, p.vent_min, out=self._base)
        np.logical_not(self.vent_on, out=self._tmp)
        np.copyto(self.vent, self._base, where=self._tmp)
        np.copyto(self.vent, self._zero, where=self.window_open)
        np.greater(self.vent_on, self._prev_vent, out=self.vent_started)
        np.copyto(self._prev_vent, self.vent_on)

    def scheduled_ventilation(self, scheduled: Mask) -> None:
        """Half speed inside the schedule, a trickle outside it."""
        self.vent.fill(0.1)
        np.copyto(self.vent, 0.5, where=scheduled)
        self.vent_started.fill(False)

    # --- lamps ------------------------------------------------------------------------------
    def lamps(self, week_hour: float, motion: F32, lux: F32, dimming: bool) -> None:
        """Lamps on for `light_hold_min` after motion; dimmed to top daylight up if `dimming`.

        `week_hour` is weekday * 24 + hour, so the hold survives midnight.
        """
        self._hour.fill(week_hour)
        np.greater(motion, 0.5, out=self._tmp)
        np.copyto(self._last_motion, self._hour, where=self._tmp)
        np.subtract(self._hour, self._last_motion, out=self._since)
        np.mod(self._since, 168.0, out=self._since)
        np.less(self._since, self._hold_h, out=self._lit)
        if dimming:
            # Integral control on the measured illuminance (daylight plus our own lamps), with
            # the gain of one lamp's lux per level: a dark room is lit right on the next tick.
            np.subtract(self.p.lux_target, lux, out=self._level)
            np.multiply(self._level, 1.0 / LUX_PER_LEVEL, out=self._level)
            np.add(self.lights, self._level, out=self.lights)
            np.clip(self.lights, 0.0, 1.0, out=self.lights)
        else:
            self.lights.fill(1.0)
        np.logical_not(self._lit, out=self._tmp)
        np.copyto(self.lights, self._zero, where=self._tmp)
