"""Energy monitoring: anomaly alarms on household mains power, plus rolling energy aggregates."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from agent.errors import ModelError, PluginError
from agent.hal.base import ActuatorSpec, SensorSpec
from agent.plugin.base import Plugin, PluginContext, PluginParams
from agent.runtime.base import Model
from plugins.energy.alarm import AlarmLogic
from plugins.energy.config import Params
from plugins.energy.const import CLASSES, FINE, HOUR_BLOCKS, INPUT_SIZE, MAX_W
from plugins.energy.threshold import ThresholdDetector
from plugins.energy.window import PowerWindow

TELEMETRY_FIELDS = (
    "power_w",
    "mean_w",
    "energy_kwh",
    "energy_kwh_1h",
    "score",
    "alarm",
    "anomalies",
    "dropouts",
    "missing_samples",
)


class EnergyPlugin(Plugin):
    """Reads mains power each tick, scores the window with the int8 CNN, raises rare alarms.

    One reading per tick, each standing for `sample_period_s` of the house (1 s; the simulator
    runs 50x real time, so 50 Hz). Events: the fault kind the model finds most likely
    (`spike`, `compressor_failure`, `standby_creep`) once per anomaly episode, and
    `sensor_dropout` once per dropout. Without a model it runs the threshold baseline.
    """

    Params: ClassVar[type[PluginParams]] = Params
    sensors: ClassVar[dict[str, SensorSpec]] = {
        "mains": SensorSpec((1,), "W", "whole-house active power", low=-MAX_W, high=MAX_W),
    }
    actuators: ClassVar[dict[str, ActuatorSpec]] = {
        "alarm": ActuatorSpec((1,), "", "anomaly indicator: 1 while an anomaly is active"),
    }
    telemetry_fields: ClassVar[tuple[str, ...]] = TELEMETRY_FIELDS
    default_model: ClassVar[str | None] = "energy_anomaly"
    default_rate_hz: ClassVar[float] = 50.0
    simulator: ClassVar[str | None] = "sim.energy.world:HouseholdPower"

    def setup(self, ctx: PluginContext) -> None:
        """Bind devices and model buffers, allocate rings and the telemetry row."""
        if ctx.model is not None:
            self.check_model(ctx.model.model)
        self._ctx = ctx
        try:
            self._read = ctx.sensors["mains"].read_into
            self._alarm_out = ctx.actuators["alarm"].write
        except KeyError as exc:
            raise PluginError(f"energy plugin needs device {exc.args[0]!r}") from None
        self._emit = ctx.out.telemetry
        self._event = ctx.out.event
        self._sample = np.zeros(1, np.float32)
        self._alarm_buf = np.zeros(1, np.float32)
        self._row = np.zeros(len(TELEMETRY_FIELDS), np.float64)
        self._hour = np.zeros(HOUR_BLOCKS, np.float64)
        self._window = PowerWindow()
        if ctx.model is not None:
            slot = ctx.model
            # Slot buffers outlive any model swapped in, so these views stay valid.
            self._in_fine = slot.inputs[0][0, :FINE]
            self._in_coarse = slot.inputs[0][0, FINE:]
            self._probs = slot.outputs[0][0]
            self._run = slot.run
        self._baseline = ThresholdDetector(spike_w=0.0)
        self._alarm = AlarmLogic(threshold=1.0, release=0.0, confirm=1, rearm=1)
        self.apply_params(ctx.params)
        self._ticks = 0
        self._last = 0.0
        self._in_dropout = False
        self._dropouts = 0
        self._missing = 0
        self._anomalies = 0
        self._score = 0.0
        self._energy_wh = 0.0
        self._block_wh = 0.0
        self._hour_i = 0
        self._hour_wh = 0.0
        self._sum_w = 0.0
        self._n_w = 0

    def apply_params(self, params: PluginParams) -> None:
        """Take new params between ticks (detector, alarm logic, pacing)."""
        p = params if isinstance(params, Params) else Params.model_validate(params.model_dump())
        self._params = p
        self._use_model = p.detector == "model" and self._ctx.model is not None
        self._infer_every = p.infer_every
        self._telemetry_every = p.telemetry_every
        self._period_h = p.sample_period_s / 3600.0
        self._baseline.spike_w = p.spike_w
        alarm = self._alarm
        if self._use_model:
            alarm.threshold, alarm.release, alarm.confirm = p.threshold, p.release, p.confirm_ticks
        else:
            # The baseline's score is 0 or 1: a rule holding is an alarm.
            alarm.threshold, alarm.release, alarm.confirm = 0.5, 0.5, 1
        alarm.rearm = p.rearm_ticks

    def check_model(self, model: Model) -> None:
        """Raise ModelError unless `model` takes the power window and returns class scores."""
        ins = [tuple(s.shape) for s in model.inputs]
        outs = [tuple(s.shape) for s in model.outputs]
        if ins != [(1, INPUT_SIZE)] or outs != [(1, len(CLASSES))]:
            raise ModelError(
                f"energy plugin needs input (1, {INPUT_SIZE}) and output (1, {len(CLASSES)}),"
                f" model has inputs {ins} outputs {outs}",
                path=model.path,
            )

    def tick(self, now_ns: int) -> None:
        """Read, update window and aggregates, detect, alarm, report."""
        ok = self._read(self._sample)
        x = float(self._sample[0])
        fresh = ok and x - x == 0.0  # NaN for NaN and for +-inf
        if fresh:
            self._last = x
            self._in_dropout = False
        else:
            self._missing += 1
            if not self._in_dropout:
                self._in_dropout = True
                self._dropouts += 1
                self._event(now_ns, "sensor_dropout", 1.0, sensor="mains",
                            reason="missing" if not ok else "nan" if x != x else "inf")  # fmt: skip
            if not self._window.primed:
                return
            x = self._last  # hold the last good reading
        window = self._window
        if not window.primed:
            window.prime(x)
            self._baseline.reset(x)
        block_done = window.push(x)
        self._account(x)
        if block_done:
            self._close_block()
        self._ticks += 1
        if fresh and self._ticks % self._infer_every == 0:
            self._detect(now_ns, x)
        if self._ticks % self._telemetry_every == 0:
            self._report(now_ns, x)

    def teardown(self) -> None:
        """Leave the indicator off."""
        if self._alarm.active:
            self._alarm_buf[0] = 0.0
            self._alarm_out(self._alarm_buf)

    def _detect(self, now_ns: int, x: float) -> None:
        if self._use_model:
            self._window.write_sqrt(self._in_fine, self._in_coarse)
            self._run()
            self._score = score = 1.0 - float(self._probs[0])
        else:
            self._score = score = self._baseline.update(x)
        was_active = self._alarm.active
        if self._alarm.update(score):
            self._anomalies += 1
            kind = self._model_kind() if self._use_model else self._baseline.kind
            self._event(now_ns, kind, score, power_w=round(x, 1),
                        detector="model" if self._use_model else "threshold")  # fmt: skip
        if self._alarm.active != was_active:
            self._alarm_buf[0] = 1.0 if self._alarm.active else 0.0
            self._alarm_out(self._alarm_buf)

    def _model_kind(self) -> str:
        probs = self._probs
        best, best_p = 1, float(probs[1])
        for i in range(2, len(CLASSES)):
            p = float(probs[i])
            if p > best_p:
                best, best_p = i, p
        return CLASSES[best]

    def _account(self, x: float) -> None:
        if not -MAX_W <= x <= MAX_W:  # False for NaN too: the totals stay finite whatever comes
            return
        wh = x * self._period_h  # W x h = Wh
        self._energy_wh += wh
        self._block_wh += wh
        self._sum_w += x
        self._n_w += 1

    def _close_block(self) -> None:
        # Rolling hour of energy: one slot per block; re-summed once per lap against drift.
        i = self._hour_i
        self._hour_wh += self._block_wh - float(self._hour[i])
        self._hour[i] = self._block_wh
        self._block_wh = 0.0
        i += 1
        if i == HOUR_BLOCKS:
            i = 0
            self._hour_wh = float(self._hour.sum())
        self._hour_i = i

    def _report(self, now_ns: int, x: float) -> None:
        row = self._row
        row[0] = x
        row[1] = self._sum_w / self._n_w if self._n_w else x
        row[2] = self._energy_wh / 1000.0
        row[3] = self._hour_wh / 1000.0
        row[4] = self._score
        row[5] = 1.0 if self._alarm.active else 0.0
        row[6] = self._anomalies
        row[7] = self._dropouts
        row[8] = self._missing
        self._sum_w = 0.0
        self._n_w = 0
        self._emit(now_ns, row)


__all__ = ["TELEMETRY_FIELDS", "EnergyPlugin"]
