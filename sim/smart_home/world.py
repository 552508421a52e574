"""The smart home simulator as the agent sees it: one house behind sensors and actuators."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import numpy.typing as npt

from agent.hal.base import ActuatorSpec, SensorSpec
from agent.hal.simulator import Simulator
from sim.smart_home.house import DT, N_ROOMS, ROOMS, Behaviour, Climate, Houses

_R = (N_ROOMS,)
SENSORS: dict[str, SensorSpec] = {
    "temperature": SensorSpec(_R, "degC", "Air temperature per room"),
    "co2": SensorSpec(_R, "ppm", "CO2 concentration per room"),
    "light": SensorSpec(_R, "lux", "Illuminance per room (daylight plus lamps)"),
    "motion": SensorSpec(_R, "0/1", "PIR motion seen during the last step, per room"),
    "window": SensorSpec(_R, "0/1", "Window contact, 1 = open, per room"),
    "power": SensorSpec(_R, "W", "Electric power per room circuit (HVAC, lamps, fan)"),
    "outdoor_temp": SensorSpec((1,), "degC", "Outdoor air temperature"),
    "clock": SensorSpec((2,), "h, day", "Local hour of day (0-24) and weekday (0 = Monday)"),
}
ACTUATORS: dict[str, ActuatorSpec] = {
    "heat_setpoint": ActuatorSpec(_R, "degC", "Heating setpoint per room (5-30)"),
    "cool_setpoint": ActuatorSpec(_R, "degC", "Cooling setpoint per room (16-35)"),
    "lights": ActuatorSpec(_R, "0-1", "Lamp dimming level per room (400 lux, 60 W at 1)"),
    "ventilation": ActuatorSpec(_R, "0-1", "Ventilation fan level per room (40 l/s at 1)"),
}
_DROPPABLE = tuple(n for n in SENSORS if n != "clock")


class HouseSim(Simulator):
    """A four-room house (living, kitchen, bedroom, office) with its household.

    Defaults suit the live demo: the day starts at 06:30 so people wake up within seconds,
    windows open often and sensors drop out now and then. The evaluation passes realistic
    rates (`window_per_h=0.15`, `dropout_per_h=0.02`, `start_hour=0`).
    """

    dt: ClassVar[float] = DT
    sensors: ClassVar[dict[str, SensorSpec]] = SENSORS
    actuators: ClassVar[dict[str, ActuatorSpec]] = ACTUATORS
    realtime_speed: ClassVar[float] = 300.0
    """A house day in under five minutes; at 10 Hz one tick is one 30 s step, as in lockstep."""
    rooms: ClassVar[tuple[str, ...]] = ROOMS

    def __init__(
        self,
        *,
        start_hour: float = 6.5,
        window_per_h: float = 0.6,
        dropout_per_h: float = 0.1,
        dropout_min: float = 3.0,
        climate: Climate | None = None,
        comfort_band: tuple[float, float] = (20.0, 24.0),
    ) -> None:
        self.start_hour = start_hour
        self.dropout_per_h = dropout_per_h
        self.dropout_min = dropout_min
        self.climate = climate or Climate()
        self.behaviour = Behaviour(
            window_per_h=window_per_h, comfort_low=comfort_band[0], comfort_high=comfort_band[1]
        )
        self._bufs = {n: np.zeros(s.shape, np.float32) for n, s in SENSORS.items()}
        self._cmd = {
            "heat_setpoint": np.full((1, N_ROOMS), 20.0),
            "cool_setpoint": np.full((1, N_ROOMS), 25.0),
            "lights": np.zeros((1, N_ROOMS)),
            "ventilation": np.full((1, N_ROOMS), 0.2),
        }
        self.reset(0)

    def reset(self, seed: int) -> None:
        """A new household, house and weather drawn from `seed`."""
        self.house = Houses(
            1, seed, start_hour=self.start_hour, climate=self.climate, behaviour=self.behaviour
        )
        self._rng = np.random.default_rng([seed, 1])
        self.t = 0.0
        self.dropped: str | None = None
        """The sensor currently out (None when all report)."""
        self._drop_until = 0.0
        self._drop_nan = False
        self.dropouts = 0
        self._publish()

    def step(self) -> None:
        """Advance the house by `dt` with the last commands."""
        c = self._cmd
        self.house.command(c["heat_setpoint"], c["cool_setpoint"], c["lights"], c["ventilation"])
        self.house.step()
        self.t = self.house.t
        self._dropout()
        self._publish()

    def read(self, sensor: str, out: npt.NDArray[np.float32]) -> bool:
        """Copy the reading; False (or NaN values) while that sensor is dropped out."""
        if sensor == self.dropped:
            if not self._drop_nan:
                return False
            out.fill(np.nan)
            return True
        out[...] = self._bufs[sensor]  # a third of np.copyto's cost: this runs inside a tick
        return True

    def actuate(self, actuator: str, value: npt.NDArray[np.float32]) -> None:
        """Take a command for the next step; non-finite commands are ignored, like bad packets."""
        norm = float(value.dot(value))  # finite for the usual command: one call, no temporary
        if norm - norm == 0.0 or bool(np.isfinite(value).all()):
            self._cmd[actuator][0] = value

    def _dropout(self) -> None:
        if self.dropped is not None and self.t >= self._drop_until:
            self.dropped = None
        rate = self.dropout_per_h * DT / 3600.0
        if self.dropped is None and self._rng.random() < rate:
            self.dropped = _DROPPABLE[int(self._rng.integers(len(_DROPPABLE)))]
            self._drop_until = self.t + 60.0 * self.dropout_min * self._rng.exponential()
            self._drop_nan = bool(self._rng.random() < 0.5)
            self.dropouts += 1

    def _publish(self) -> None:
        h, b = self.house, self._bufs
        b["temperature"][:] = h.s_temp[0]
        b["co2"][:] = h.s_co2[0]
        b["light"][:] = h.s_light[0]
        b["motion"][:] = h.s_motion[0]
        b["window"][:] = h.window[0]
        b["power"][:] = h.s_power[0]
        b["outdoor_temp"][0] = h.t_out[0]
        b["clock"][0] = h.hour_of_day
        b["clock"][1] = h.day_of_week[0]
