"""The model runner: any imported model in a real-time loop, from configuration alone."""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np
import numpy.typing as npt

from agent.errors import ModelError, PluginError
from agent.hal.base import SensorSpec
from agent.plugin.base import Plugin, PluginContext, PluginParams
from agent.runtime.base import Model
from plugins.model_runner.config import (
    ClassChangeRule,
    ModelRunnerParams,
    ThresholdRule,
    telemetry_fields,
)
from plugins.model_runner.rules import ClassChange, Threshold

FloatArray = npt.NDArray[np.float32]


class ModelRunnerPlugin(Plugin):
    """Feeds HAL sensors through a sliding window into a model and publishes what it says.

    Each tick reads one value per channel (scaled and offset) into a doubled ring buffer, so the
    last `window` readings are always one contiguous slice, pre-built as a view at setup; every
    `every_n_ticks` ticks, once the window is full, that slice is copied into the model's input
    and the model runs. Labelled outputs publish their top class and probability, others their
    values; rules turn outputs into events. A missing, NaN or infinite reading is a
    `sensor_dropout` event (once per episode and channel); while any channel is out, nothing is
    pushed and the model does not run, so no invented value ever reaches it.

    Its sensors and telemetry fields come from params, so the host asks `for_params` for the
    class to run: a subclass declaring exactly the configured devices and fields.
    """

    Params = ModelRunnerParams
    sensors: ClassVar[dict[str, SensorSpec]] = {"signal": SensorSpec((1,))}
    telemetry_fields: ClassVar[tuple[str, ...]] = telemetry_fields(ModelRunnerParams())
    default_model: ClassVar[str | None] = None
    default_rate_hz: ClassVar[float] = 50.0
    simulator: ClassVar[str | None] = "sim.signals:SignalSimulator"

    @classmethod
    def for_params(cls, params: PluginParams) -> type[Plugin]:
        """A subclass whose sensors and telemetry fields are the ones `params` configure."""
        p = ModelRunnerParams.model_validate(params.model_dump())
        sensors = {c.sensor: SensorSpec((1,), c.unit, f"channel {i}") for i, c in
                   enumerate(p.channels)}  # fmt: skip
        attrs = {"sensors": sensors, "telemetry_fields": telemetry_fields(p)}
        return type(cls.__name__, (cls,), {**attrs, "__module__": cls.__module__})

    def setup(self, ctx: PluginContext) -> None:
        """Check the model against the params; bind devices; allocate every buffer."""
        if ctx.model is None:
            raise PluginError('model_runner needs a model: set model = "<imported name>"')
        p = ModelRunnerParams.model_validate(ctx.params.model_dump())
        self._check_shapes(
            [b.shape for b in ctx.model.inputs], [b.shape for b in ctx.model.outputs], p, None
        )
        self._ctx = ctx
        self._layout = p.layout_key()
        n, c = p.window, len(p.channels)
        self._n = n
        self._channels = tuple(
            (i, ctx.sensors[ch.sensor].read_into, ch.sensor) for i, ch in enumerate(p.channels)
        )
        self._raw = np.zeros((c, 1), np.float32)
        self._raw_rows = tuple(self._raw[i] for i in range(c))
        self._raw_flat = self._raw.reshape(c)
        self._scale = np.ones(c, np.float32)
        self._offset = np.zeros(c, np.float32)
        self._ring = np.zeros((2 * n, c), np.float32)
        self._lo = tuple(self._ring[i] for i in range(n))
        self._hi = tuple(self._ring[i + n] for i in range(n))
        latest = [self._ring[i + 1 : i + 1 + n] for i in range(n)]
        if p.layout == "channel_major":
            latest = [w.T for w in latest]
        self._windows = tuple(latest)
        self._in_view = ctx.model.inputs[0].reshape(latest[0].shape)
        self._run = ctx.model.run  # the slot's run: follows model swaps
        self._row = np.zeros(len(type(self).telemetry_fields), np.float64)
        self._bind_outputs(ctx, p)
        self._dropped = [False] * c
        self._pos = 0
        self._filled = 0
        self._ticks = 0
        self._runs = 0
        self.dropouts = 0
        self.apply_params(p)

    def _bind_outputs(self, ctx: PluginContext, p: ModelRunnerParams) -> None:
        """Views of each output, its telemetry slots, and the rules fed from it."""
        assert ctx.model is not None
        labelled: list[tuple[FloatArray, int, tuple[ClassChange, ...]]] = []
        plain: list[tuple[FloatArray, npt.NDArray[np.float64]]] = []
        levels: list[tuple[FloatArray, int, Threshold]] = []
        changes: list[ClassChange] = []
        offset = 0
        for o in p.outputs:
            flat = ctx.model.outputs[o.index].reshape(-1)
            mine = [r for r in p.rules if r.output == o.name]
            if o.labels:
                rules = tuple(
                    ClassChange(r.event, o.name, o.labels)
                    for r in mine
                    if isinstance(r, ClassChangeRule)
                )
                changes += rules
                labelled.append((flat, offset, rules))
                offset += 2
            else:
                plain.append((flat, self._row[offset : offset + o.size]))
                offset += o.size
            levels += [(flat, r.value, Threshold(r.event, o.name)) for r in mine
                       if isinstance(r, ThresholdRule)]  # fmt: skip
        self._labelled = tuple(labelled)
        self._plain = tuple(plain)
        self._threshold_feeds = tuple(levels)
        self._rules: list[ClassChange | Threshold] = [*changes, *(t for _, _, t in levels)]

    def apply_params(self, params: PluginParams) -> None:
        """Take new scales, offsets, rates and rule levels; the layout needs a restart."""
        if not isinstance(params, ModelRunnerParams):
            raise PluginError(f"model_runner takes ModelRunnerParams, got {type(params).__name__}")
        if params.layout_key() != self._layout or len(params.rules) != len(self._rules):
            raise PluginError(
                "model_runner: channels, window, layout, outputs and the rule list are fixed "
                "at start; restart the plugin to change them"
            )
        self._scale[:] = [c.scale for c in params.channels]
        self._offset[:] = [c.offset for c in params.channels]
        self._every = params.every_n_ticks
        self._telemetry_every = params.telemetry_every
        ordered: list[ClassChangeRule | ThresholdRule] = [
            r for o in params.outputs for r in params.rules
            if r.output == o.name and isinstance(r, ClassChangeRule)
        ]  # fmt: skip
        ordered += [r for o in params.outputs for r in params.rules if r.output == o.name and
                    isinstance(r, ThresholdRule)]  # fmt: skip
        for rule, cfg in zip(self._rules, ordered, strict=True):
            if isinstance(cfg, ClassChangeRule) and isinstance(rule, ClassChange):
                rule.configure(cfg.min_probability, int(cfg.hold_s * 1e9))
            elif isinstance(cfg, ThresholdRule) and isinstance(rule, Threshold):
                rule.configure(cfg.above, cfg.clear)
        self._params = params

    def check_model(self, model: Model) -> None:
        """Raise ModelError unless `model` fits the configured window, channels and outputs."""
        self._check_shapes(
            [tuple(s.shape) for s in model.inputs],
            [tuple(s.shape) for s in model.outputs],
            self._params,
            model,
        )

    @staticmethod
    def _check_shapes(
        ins: list[tuple[int, ...]], outs: list[tuple[int, ...]], p: ModelRunnerParams,
        m: Model | None,
    ) -> None:  # fmt: skip
        want = p.window * len(p.channels)
        problems = []
        if len(ins) != 1 or math.prod(ins[0]) != want:
            problems.append(
                f"one input of {p.window} readings x {len(p.channels)} channel(s) = {want} "
                f"values, got inputs {ins}"
            )
        for o in p.outputs:
            size = len(o.labels) or o.size
            if o.index >= len(outs):
                problems.append(
                    f"output {o.name!r} is model output {o.index}, model has {len(outs)}"
                )
            elif math.prod(outs[o.index]) != size:
                problems.append(f"output {o.name!r} needs {size} values, got shape {outs[o.index]}")
        sizes = {o.name: len(o.labels) or o.size for o in p.outputs}
        for r in p.rules:
            if isinstance(r, ThresholdRule) and r.value >= sizes[r.output]:
                problems.append(
                    f"threshold on {r.output!r} value {r.value}: it has {sizes[r.output]}"
                )
        if problems:
            raise ModelError("model_runner: " + "; ".join(problems), path=m.path if m else None)

    def tick(self, now_ns: int) -> None:
        """Read every channel; push the readings; run the model every Nth tick on a full window."""
        self._ticks += 1
        ok = True
        for i, read, name in self._channels:
            raw = self._raw_rows[i]
            good = read(raw)
            if good:
                v = float(raw[0])
                good = v - v == 0.0  # False for NaN and for +-inf
            if not good:
                ok = False
                if not self._dropped[i]:
                    self._dropped[i] = True
                    self.dropouts += 1
                    self._ctx.out.event(now_ns, "sensor_dropout", 1.0, sensor=name)
            elif self._dropped[i]:
                self._dropped[i] = False
        if not ok:
            return
        pos = self._pos
        lo = self._lo[pos]
        np.multiply(self._raw_flat, self._scale, out=lo)
        np.add(lo, self._offset, out=lo)
        np.copyto(self._hi[pos], lo)
        self._pos = pos + 1 if pos + 1 < self._n else 0
        if self._filled < self._n:
            self._filled += 1
            if self._filled < self._n:
                return
        if self._ticks % self._every:
            return
        np.copyto(self._in_view, self._windows[pos])
        self._run()
        self._runs += 1
        self._publish(now_ns)

    def _publish(self, now_ns: int) -> None:
        out = self._ctx.out
        row = self._row
        for flat, offset, changes in self._labelled:
            top = int(flat.argmax())
            p = float(flat[top])
            row[offset] = top
            row[offset + 1] = p
            if p == p:
                for rule in changes:
                    rule.feed(now_ns, top, p, out)
        for flat, view in self._plain:
            np.copyto(view, flat)
        for flat, value, level in self._threshold_feeds:
            level.feed(now_ns, float(flat[value]), out)
        if self._runs % self._telemetry_every == 0:
            row[-1] = self.dropouts
            out.telemetry(now_ns, row)
