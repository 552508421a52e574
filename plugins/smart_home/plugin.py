"""The smart home plugin: occupancy forecasts drive each room's HVAC, ventilation and lamps.

Every tick reads the sensors (holding the last good value through dropouts), adds the readings
to the current five-minute bin, and drives ventilation and lamps; when the house clock enters a
new bin, the bin's feature row joins the one-hour window, the model runs once and the heating
and cooling setpoints follow its forecasts. Without a model (or with `control = "schedule"`)
the plugin is a fixed-schedule thermostat: the baseline the evaluation compares against.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import numpy.typing as npt

from agent.errors import ModelError, PluginError
from agent.hal.base import ActuatorSpec, SensorSpec
from agent.plugin.base import Plugin, PluginContext, PluginParams
from agent.runtime.base import Model
from agent.runtime.slot import ModelSlot
from plugins.smart_home.config import ROOMS, Params
from plugins.smart_home.control import Rooms
from plugins.smart_home.features import WINDOW_BINS, FeatureBins, bin_index, n_features
from plugins.smart_home.sensors import SensorBank

N = len(ROOMS)
INPUT_SHAPE = (1, WINDOW_BINS, n_features(N))
OUTPUT_SHAPE = (1, N, 3)
_PER_ROOM = ("temp", "heat_sp", "cool_sp", "occupancy", "co2", "power")
TELEMETRY = (
    *(f"{k}_{r}" for k in _PER_ROOM for r in ROOMS),
    "outdoor_temp",
    "power_total",
    "sensor_outages",
)
_INITIAL = {"temperature": 20.0, "co2": 420.0, "outdoor_temp": 10.0}


class SmartHomePlugin(Plugin):
    """Comfort control of a four-room house from per-room occupancy forecasts."""

    Params: ClassVar[type[PluginParams]] = Params
    sensors: ClassVar[dict[str, SensorSpec]] = {
        "temperature": SensorSpec((N,), "degC", "Air temperature per room", low=-60, high=100),
        "co2": SensorSpec((N,), "ppm", "CO2 per room", low=0, high=100_000),
        "light": SensorSpec((N,), "lux", "Illuminance per room", low=0, high=200_000),
        "motion": SensorSpec((N,), "0/1", "PIR motion per room", low=0, high=1),
        "window": SensorSpec((N,), "0/1", "Window contact per room, 1 = open", low=0, high=1),
        "power": SensorSpec((N,), "W", "Electric power per room circuit", low=-1e5, high=1e5),
        "outdoor_temp": SensorSpec((1,), "degC", "Outdoor temperature", low=-90, high=70),
        "clock": SensorSpec(
            (2,), "h, day", "Local hour (0-24) and weekday (0 = Monday)", low=0, high=24
        ),
    }
    actuators: ClassVar[dict[str, ActuatorSpec]] = {
        "heat_setpoint": ActuatorSpec((N,), "degC", "Heating setpoint per room"),
        "cool_setpoint": ActuatorSpec((N,), "degC", "Cooling setpoint per room"),
        "lights": ActuatorSpec((N,), "0-1", "Lamp level per room"),
        "ventilation": ActuatorSpec((N,), "0-1", "Ventilation level per room"),
    }
    telemetry_fields: ClassVar[tuple[str, ...]] = TELEMETRY
    default_model: ClassVar[str | None] = "smart_home_comfort"
    default_rate_hz: ClassVar[float] = 10.0
    simulator: ClassVar[str | None] = "sim.smart_home.world:HouseSim"

    def setup(self, ctx: PluginContext) -> None:
        """Allocate every buffer, bind the model slot's buffers and apply the params."""
        self.ctx = ctx
        self.bank = SensorBank(ctx.sensors, _INITIAL)
        v = self.bank.values
        self._temp, self._co2, self._light = v["temperature"], v["co2"], v["light"]
        self._motion, self._window, self._power = v["motion"], v["window"], v["power"]
        self._outdoor, self._clock = v["outdoor_temp"], v["clock"]
        self._clock_i = self.bank.names.index("clock")
        self.features = FeatureBins(N)
        self._slot: ModelSlot | None = ctx.model
        if ctx.model is not None:
            self.check_shapes(ctx.model.inputs[0].shape, ctx.model.outputs[0].shape, "slot")
            self._model_in = ctx.model.inputs[0]
            out = ctx.model.outputs[0][0]
            self._p_now, self._p_30, self._p_60 = out[:, 0], out[:, 1], out[:, 2]
        self._sched_zero = np.zeros(N, np.bool_)
        self.rooms = Rooms(Params.model_validate({}))
        self.apply_params(ctx.params)
        self._act = [ctx.actuators[k] for k in self.actuators]
        self._cmd = (self.rooms.heat, self.rooms.cool, self.rooms.lights, self.rooms.vent)
        self._row = np.zeros(len(TELEMETRY), np.float64)
        self._row_views = [self._row[i * N : (i + 1) * N] for i in range(len(_PER_ROOM))]
        self._row_total = self._row[len(_PER_ROOM) * N + 1 : len(_PER_ROOM) * N + 2].reshape(())
        self._bin = -1
        self._ticks = 0
        self.inferences = 0

    def apply_params(self, params: PluginParams) -> None:
        """Take new params between ticks: thresholds, setpoint levels and the schedule table."""
        if not isinstance(params, Params):
            raise PluginError(f"smart_home takes {Params.__name__}, got {type(params).__name__}")
        self.params = params
        self.rooms.configure(params)
        self._use_model = params.control == "model" and self._slot is not None
        self._schedule = _schedule_table(params)

    def check_model(self, model: Model) -> None:
        """Raise ModelError unless `model` takes the one-hour window and gives rooms x 3."""
        self.check_shapes(model.inputs[0].shape, model.outputs[0].shape, model.path)

    @staticmethod
    def check_shapes(got_in: tuple[int, ...], got_out: tuple[int, ...], where: str) -> None:
        """Raise ModelError unless the shapes are the ones this plugin feeds and reads."""
        if tuple(got_in) != INPUT_SHAPE or tuple(got_out) != OUTPUT_SHAPE:
            raise ModelError(
                f"smart_home needs input {INPUT_SHAPE} and output {OUTPUT_SHAPE}, "
                f"got {tuple(got_in)} and {tuple(got_out)}",
                path=where,
            )

    def tick(self, now_ns: int) -> None:
        """Read, bin, maybe forecast, then drive every room."""
        if self.bank.read_all():
            self._report_outages(now_ns)
        rooms, clock = self.rooms, self._clock
        hour, weekday = float(clock[0]), float(clock[1])
        self.features.add(self._motion, self._window, self._co2)
        b = bin_index(hour, weekday)
        if b != self._bin and self.bank.seen[self._clock_i]:
            self._bin = b
            self._new_bin(hour, weekday)
            self._setpoint_events(now_ns)
        rooms.window_override(self._window)
        if self._use_model:
            rooms.demand_ventilation(self._co2)
        else:
            rooms.scheduled_ventilation(rooms.occupied)
        rooms.lamps(weekday * 24.0 + hour, self._motion, self._light, self._use_model)
        if rooms.window_opened.any() or rooms.vent_started.any():
            self._room_events(now_ns)
        for i in range(4):
            self._act[i].write(self._cmd[i])
        self._ticks += 1
        if self._ticks % self.params.telemetry_every == 0:
            self._telemetry(now_ns)

    def _new_bin(self, hour: float, weekday: float) -> None:
        weekend = 1.0 if weekday >= 5.0 else 0.0
        self.features.close(hour, weekend)
        if self._use_model and self._slot is not None:
            self.features.window_into(self._model_in)
            self._slot.run()
            self.inferences += 1
            self.rooms.from_forecast(self._p_now, self._p_30, self._p_60)
        else:
            table = self._schedule[1 if weekend else 0]
            self.rooms.from_schedule(table[int(hour * 12.0) % 288])

    def _setpoint_events(self, now_ns: int) -> None:
        rooms, out = self.rooms, self.ctx.out
        if rooms.preheat_started.any():
            for r in range(N):
                if rooms.preheat_started[r]:
                    p, sp = float(self._p_30[r]), float(rooms.heat[r])
                    out.event(now_ns, "preheat_start", p, room=ROOMS[r], setpoint=sp)
        if rooms.comfort_ended.any():
            for r in range(N):
                if rooms.comfort_ended[r]:
                    out.event(now_ns, "setback", 1.0, room=ROOMS[r], setpoint=float(rooms.heat[r]))

    def _room_events(self, now_ns: int) -> None:
        rooms, out = self.rooms, self.ctx.out
        for r in range(N):
            if rooms.window_opened[r]:
                out.event(now_ns, "window_open_hvac_off", 1.0, room=ROOMS[r])
            if rooms.vent_started[r]:
                co2 = float(self._co2[r])
                out.event(now_ns, "ventilation_on", co2 / 1000.0, room=ROOMS[r], co2_ppm=co2)

    def _report_outages(self, now_ns: int) -> None:
        bank = self.bank
        for i in range(len(bank.names)):
            if bank.went_down[i]:
                self.ctx.out.event(now_ns, "sensor_dropout", 1.0, sensor=bank.names[i])

    def _telemetry(self, now_ns: int) -> None:
        rooms, views = self.rooms, self._row_views
        np.copyto(views[0], self._temp)
        np.copyto(views[1], rooms.heat)
        np.copyto(views[2], rooms.cool)
        if self._use_model:
            np.copyto(views[3], self._p_now)
        else:
            np.copyto(views[3], rooms.occupied)
        np.copyto(views[4], self._co2)
        np.copyto(views[5], self._power)
        k = len(_PER_ROOM) * N
        self._row[k] = self._outdoor[0]
        np.sum(self._power, out=self._row_total)
        self._row[k + 2] = self.bank.outages
        self.ctx.out.telemetry(now_ns, self._row)


def _schedule_table(params: Params) -> tuple[list[npt.NDArray[np.bool_]], ...]:
    """Per day kind (weekday, weekend), per five-minute slot of the day: rooms in comfort."""
    tables: list[list[npt.NDArray[np.bool_]]] = []
    for kind in ("weekday", "weekend"):
        slots = []
        for s in range(288):
            hour = (s + 0.5) / 12.0
            mask = np.zeros(N, np.bool_)
            for r, room in enumerate(ROOMS):
                sched = params.schedule.get(room)
                periods = getattr(sched, kind) if sched is not None else []
                mask[r] = any(a <= hour < b for a, b in periods)
            slots.append(mask)
        tables.append(slots)
    return tables[0], tables[1]
