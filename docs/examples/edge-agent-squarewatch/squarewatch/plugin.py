"""The SquareWatch plugin: a window of readings in, the classifier's square score out."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from pydantic import Field

from agent.errors import ModelError, PluginError
from agent.hal.base import ActuatorSpec, SensorSpec
from agent.plugin.base import Plugin, PluginContext, PluginParams
from agent.runtime.base import Model

WINDOW = 16
SQUARE = 1  # waveform_classifier's classes: sine, square, triangle, sawtooth


class SquareWatchParams(PluginParams):
    """Tunable while running (config reload or the plugin.set_params command)."""

    on_above: float = Field(0.8, ge=0.0, le=1.0, description="Lamp on at this square score")
    off_below: float = Field(0.4, ge=0.0, le=1.0, description="Lamp off below this score")


class SquareWatch(Plugin):
    """Every tick: one reading into a 16-sample window, the model, the lamp, telemetry."""

    Params = SquareWatchParams
    sensors: ClassVar[dict[str, SensorSpec]] = {"signal": SensorSpec((1,), "V", "the input")}
    actuators: ClassVar[dict[str, ActuatorSpec]] = {"lamp": ActuatorSpec((1,), "", "1 = on")}
    telemetry_fields: ClassVar[tuple[str, ...]] = ("square", "lamp")
    default_model: ClassVar[str | None] = "waveform_classifier"
    default_rate_hz: ClassVar[float] = 50.0
    simulator: ClassVar[str | None] = "sim.signals:SignalSimulator"

    def setup(self, ctx: PluginContext) -> None:
        """Check the model, then allocate everything the tick touches."""
        if ctx.model is None:
            raise PluginError('squarewatch needs model = "waveform_classifier"')
        self.check_model(ctx.model.model)
        self._ctx = ctx
        self._read = ctx.sensors["signal"].read_into
        self._lamp_write = ctx.actuators["lamp"].write
        self._window = ctx.model.inputs[0][0]  # a view into the slot: valid across model swaps
        self._scores = ctx.model.outputs[0][0]
        self._run = ctx.model.run
        self._reading = np.zeros(1, np.float32)
        self._lamp = np.zeros(1, np.float32)
        self._row = np.zeros(2, np.float64)
        self._filled = 0
        self._dropout = False
        self.apply_params(ctx.params)

    def apply_params(self, params: PluginParams) -> None:
        """Take new levels between two ticks."""
        if not isinstance(params, SquareWatchParams):
            raise PluginError(f"squarewatch takes SquareWatchParams, got {type(params).__name__}")
        self._params = params

    def check_model(self, model: Model) -> None:
        """Only a (1, 16) -> (1, 4) classifier fits."""
        ins = [tuple(s.shape) for s in model.inputs]
        outs = [tuple(s.shape) for s in model.outputs]
        if ins != [(1, WINDOW)] or outs != [(1, 4)]:
            raise ModelError(f"squarewatch needs (1, 16) -> (1, 4), got {ins} -> {outs}")

    def tick(self, now_ns: int) -> None:
        """Read, shift the window in place, infer, drive the lamp, report."""
        ok = self._read(self._reading)
        value = float(self._reading[0])
        if not ok or value - value != 0.0:  # missing, NaN or infinite
            if not self._dropout:
                self._dropout = True
                self._ctx.out.event(now_ns, "sensor_dropout", 1.0, sensor="signal")
            return
        self._dropout = False
        window = self._window
        window[:-1] = window[1:]  # numpy handles the overlap; no new array
        window[-1] = value
        if self._filled < WINDOW:
            self._filled += 1
            return
        self._run()
        square = float(self._scores[SQUARE])
        lit = self._lamp[0] > 0.5
        if not lit and square >= self._params.on_above:
            self._lamp[0] = 1.0
            self._ctx.out.event(now_ns, "square_on", square)
        elif lit and square < self._params.off_below:
            self._lamp[0] = 0.0
        self._lamp_write(self._lamp)
        self._row[0] = square
        self._row[1] = self._lamp[0]
        self._ctx.out.telemetry(now_ns, self._row)
