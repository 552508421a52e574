"""Where a tick's time goes: the plugin re-run with timed devices, model slot and output channel.

The proxies exist only in this bench phase (the agent's own resources are never wrapped), so the
breakdown costs a running agent nothing. Each proxy adds one Python call and a perf_counter_ns
pair (about 0.3 us with the histogram record) around what it times; `overhead_us` reports the
proxied tick against the plain tick of the same run, so the stages can be read against it.

Stages: `sensors` (every `read_into` through the HAL), `model` (the slot's `run`: copies into the
runtime's tensors, invoke, copies out), `actuators` (every `write`), `outputs` (telemetry rows and
events), and `plugin`: the tick minus those, i.e. the plugin's own Python (checks, copies into
the slot buffers, pre- and post-processing).
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

import numpy as np
import numpy.typing as npt

from agent.engine.histogram import Histogram
from agent.engine.resources import RunnerResources
from agent.engine.runner import PluginRunner
from agent.events import Event
from agent.hal.base import Actuator, Buffer, Sensor
from agent.plugin.channel import OutputChannel
from agent.runtime.base import FastPath, Model
from agent.runtime.slot import ModelSlot

STAGES = ("sensors", "model", "actuators", "outputs", "plugin")


class _Stages:
    """One histogram per stage of the current tick, plus the time spent inside proxies."""

    def __init__(self) -> None:
        self.hists = {name: Histogram() for name in STAGES}
        self.in_tick = {name: 0 for name in STAGES}


class _TimedSensor(Sensor):
    def __init__(self, inner: Sensor, stages: _Stages) -> None:
        self.spec = inner.spec
        self._read = inner.read_into
        self._stages = stages

    def read_into(self, out: Buffer) -> bool:
        start = time.perf_counter_ns()
        ok = self._read(out)
        self._stages.in_tick["sensors"] += time.perf_counter_ns() - start
        return ok


class _TimedActuator(Actuator):
    def __init__(self, inner: Actuator, stages: _Stages) -> None:
        self.spec = inner.spec
        self._write = inner.write
        self._stages = stages

    def write(self, value: Buffer) -> None:
        start = time.perf_counter_ns()
        self._write(value)
        self._stages.in_tick["actuators"] += time.perf_counter_ns() - start


class _TimedSlot(ModelSlot):
    """The same buffers and fast path as the slot it wraps; `run` timed."""

    def __init__(self, inner: ModelSlot, stages: _Stages) -> None:
        self.inputs = inner.inputs
        self.outputs = inner.outputs
        self.model = inner.model
        self._inner = inner
        self._inner_run = inner.run
        self._stages = stages

    def prepare(self, model: Model) -> FastPath:
        return self._inner.prepare(model)

    def activate(self, model: Model, fast: FastPath) -> Model:
        # A swap during the breakdown lands in the real slot, as it would without the proxy.
        self.model = model
        return self._inner.activate(model, fast)

    def run(self) -> None:
        start = time.perf_counter_ns()
        self._inner_run()
        self._stages.in_tick["model"] += time.perf_counter_ns() - start


class _TimedChannel(OutputChannel):
    """Forwards to the plugin's real channel, timing each call."""

    def __init__(self, inner: OutputChannel, stages: _Stages) -> None:
        self._inner = inner
        self.plugin = inner.plugin
        self.fields = inner.fields
        self._stages = stages

    def telemetry(self, now_ns: int, values: npt.ArrayLike) -> bool:
        start = time.perf_counter_ns()
        ok = self._inner.telemetry(now_ns, values)
        self._stages.in_tick["outputs"] += time.perf_counter_ns() - start
        return ok

    def event(self, now_ns: int, kind: str, score: float = 1.0, **data: Any) -> bool:
        start = time.perf_counter_ns()
        ok = self._inner.event(now_ns, kind, score, **data)
        self._stages.in_tick["outputs"] += time.perf_counter_ns() - start
        return ok

    # The consumer's side goes straight to the real channel: with --sync the sync thread keeps
    # draining the plugin's channel while the timed one stands in for it.

    def drain_telemetry(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
        return self._inner.drain_telemetry()

    def drain_events(self) -> list[Event]:
        return self._inner.drain_events()

    def wall_ns(self, perf_ns: int) -> int:
        return self._inner.wall_ns(perf_ns)

    @property
    def pending(self) -> tuple[int, int]:
        return self._inner.pending

    @property
    def telemetry_dropped(self) -> int:
        return self._inner.telemetry_dropped

    @property
    def events_dropped(self) -> int:  # type: ignore[override]  # read-only here: counted inside
        return self._inner.events_dropped

    @property
    def recent(self) -> deque[Event] | None:
        return self._inner.recent

    @recent.setter
    def recent(self, value: deque[Event] | None) -> None:
        self._inner.recent = value


def timed_resources(res: RunnerResources, stages: _Stages) -> RunnerResources:
    """Copies of `res` whose devices, slot and channel record into `stages`."""
    return RunnerResources(
        slot=_TimedSlot(res.slot, stages) if res.slot is not None else None,
        sensors={k: _TimedSensor(s, stages) for k, s in res.sensors.items()},
        actuators={k: _TimedActuator(a, stages) for k, a in res.actuators.items()},
        channel=_TimedChannel(res.channel, stages),
        model_name=res.model_name,
    )


def breakdown(runner: PluginRunner, seconds: float) -> dict[str, Any]:
    """Restart `runner` with timed resources for `seconds`; per-stage p50/p99/mean in microseconds.

    The runner's own resources and its plain loop come back afterwards (restarted once more).
    """
    stages = _Stages()
    plain_tick = runner.tick_hist.snapshot().summary_us()
    res = runner.res
    cls = runner.cls
    tick_hist = Histogram()

    class Timed(cls):  # type: ignore[valid-type, misc]
        """The plugin's own class, its tick closing the per-stage books."""

        def tick(self, now_ns: int) -> None:
            start = time.perf_counter_ns()
            super().tick(now_ns)
            total = time.perf_counter_ns() - start
            tick_hist.record(total)
            spent = stages.in_tick
            inside = 0
            for name in STAGES[:-1]:
                stages.hists[name].record(spent[name])
                inside += spent[name]
                spent[name] = 0
            stages.hists["plugin"].record(total - inside)

    runner.stop()
    runner.res, runner.cls = timed_resources(res, stages), Timed
    try:
        runner.start()
        time.sleep(seconds)
    finally:
        runner.stop()
        runner.res, runner.cls = res, cls
        runner.start()
    proxied = tick_hist.snapshot().summary_us()
    report: dict[str, Any] = {name: _figures(stages.hists[name]) for name in STAGES}
    report["tick_us"] = _figures(tick_hist)
    report["overhead_us"] = round(proxied["p50"] - plain_tick["p50"], 2)
    report["ticks"] = tick_hist.count
    return report


def _figures(hist: Histogram) -> dict[str, float]:
    """p50 and p99, and the mean (means add up across stages, percentiles do not)."""
    snap = hist.snapshot()
    summary = snap.summary_us()
    return {"p50": summary["p50"], "p99": summary["p99"], "mean": round(snap.mean_ns() / 1e3, 2)}
