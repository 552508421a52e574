"""A plugin wired as the host wires it, with devices a test can break on purpose."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from agent.events import Event
from agent.hal.base import Actuator, ActuatorSpec, Buffer, Sensor, SensorSpec
from agent.hal.simulator import Simulator
from agent.plugin.base import Plugin, PluginContext, PluginParams
from agent.plugin.channel import OutputChannel
from agent.runtime.base import Model
from agent.runtime.slot import ModelSlot

Fault = Literal["", "nan", "inf", "missing"]


class FaultySensor(Sensor):
    """Passes another sensor's readings through, or breaks them: NaN, inf, or no reading."""

    def __init__(self, inner: Sensor) -> None:
        self.spec = inner.spec
        self._inner = inner
        self.fault: Fault = ""

    def read_into(self, out: Buffer) -> bool:
        """The inner reading, with its first value replaced while a fault is set."""
        fault = self.fault
        if fault == "missing":
            return False
        ok = self._inner.read_into(out)
        if fault:
            out.flat[0] = math.nan if fault == "nan" else math.inf
        return ok


class ConstantSensor(Sensor):
    """The same reading every time (for plugins that come without a simulator)."""

    def __init__(self, spec: SensorSpec, value: float) -> None:
        self.spec = spec
        self._value = np.full(spec.shape, value, np.float32)

    def read_into(self, out: Buffer) -> bool:
        """Copy the constant."""
        np.copyto(out, self._value)
        return True


class SimulatedSensor(Sensor):
    """One sensor of a simulator the rig steps."""

    def __init__(self, sim: Simulator, name: str, spec: SensorSpec) -> None:
        self.spec = spec
        self._read = sim.read
        self._name = name

    def read_into(self, out: Buffer) -> bool:
        """The simulator's current reading."""
        return bool(self._read(self._name, out))


class RecordingActuator(Actuator):
    """Keeps the last command (and hands it to the simulator when there is one)."""

    def __init__(self, spec: ActuatorSpec, sim: Simulator | None, name: str) -> None:
        self.spec = spec
        self.last = np.zeros(spec.shape, np.float32)
        self.writes = 0
        self._sim = sim if sim is not None and name in sim.actuators else None
        self._name = name

    def write(self, value: Buffer) -> None:
        """Copy the command."""
        np.copyto(self.last, value)
        self.writes += 1
        if self._sim is not None:
            self._sim.actuate(self._name, self.last)


@dataclass
class Rig:
    """A set-up plugin, its devices and channel, ticked on a simulated clock."""

    plugin: Plugin
    ctx: PluginContext
    sensors: dict[str, FaultySensor]
    actuators: dict[str, RecordingActuator]
    sim: Simulator | None
    steps_per_tick: int
    period_ns: int
    ticks: int = 0
    events: list[Event] = field(default_factory=list)
    rows: int = 0
    widths: set[int] = field(default_factory=set)

    def run(self, n: int) -> None:
        """Tick `n` times, stepping the simulator between ticks; drain now and then."""
        tick = self.plugin.tick
        sim = self.sim
        for _ in range(n):
            tick(self.ticks * self.period_ns)
            self.ticks += 1
            if sim is not None:
                for _ in range(self.steps_per_tick):
                    sim.step()
            if self.ticks % 256 == 0:
                self.drain()

    def drain(self) -> None:
        """Move events and telemetry out of the channel (as the sync thread would)."""
        self.events += self.ctx.out.drain_events()
        _, rows = self.ctx.out.drain_telemetry()
        self.rows += rows.shape[0]
        if rows.shape[0]:
            self.widths.add(int(rows.shape[1]))


def build_rig(
    cls: type[Plugin],
    params: PluginParams,
    model: Model | None,
    *,
    rate_hz: float,
    sim: Simulator | None,
    constant: float,
) -> Rig:
    """Wire `cls` as the host does (model slot, devices, output channel) and call setup."""
    sensors: dict[str, FaultySensor] = {}
    for name, spec in cls.sensors.items():
        inner: Sensor = (
            SimulatedSensor(sim, name, spec) if sim is not None else ConstantSensor(spec, constant)
        )
        sensors[name] = FaultySensor(inner)
    actuators = {n: RecordingActuator(s, sim, n) for n, s in cls.actuators.items()}
    channel = OutputChannel(cls.__name__, cls.telemetry_fields, capacity=1 << 12, wall_offset_ns=0)
    ctx = PluginContext(
        name=cls.__name__,
        rate_hz=rate_hz,
        params=params,
        model=ModelSlot(model) if model is not None else None,
        sensors=dict(sensors),
        actuators=dict(actuators),
        out=channel,
    )
    plugin = cls()
    plugin.setup(ctx)
    steps = 1
    if sim is not None:
        steps = max(1, round(sim.realtime_speed / (rate_hz * sim.dt)))
    return Rig(plugin, ctx, sensors, actuators, sim, steps, int(1e9 / rate_hz))
