"""Lockstep runs: the real plugin, runtime and HAL against a simulator, in simulated time."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agent.events import Event
from agent.hal.sim import SimActuator, SimSensor
from agent.hal.simulator import Simulator, check_device
from agent.plugin.base import Plugin, PluginContext
from agent.plugin.channel import OutputChannel
from agent.runtime.base import Model
from agent.runtime.slot import ModelSlot


@dataclass
class LockstepResult:
    """What a lockstep run produced: every event and telemetry row, with simulated times."""

    events: list[Event] = field(default_factory=list)
    telemetry_ts_ns: list[int] = field(default_factory=list)
    telemetry: list[list[float]] = field(default_factory=list)
    ticks: int = 0


def run_lockstep(
    plugin: Plugin,
    sim: Simulator,
    *,
    duration_s: float,
    rate_hz: float,
    params: dict[str, Any] | None = None,
    model: Model | None = None,
    on_tick: Callable[[Simulator, int], None] | None = None,
) -> LockstepResult:
    """Tick `plugin` at `rate_hz` (per wall second of the real-time world) for `duration_s` sim s.

    The plugin gets the same context as under the engine (model slot, sim HAL devices, output
    channel); only the clock is simulated, so a run may go faster than real time.
    """
    for name, spec in plugin.sensors.items():
        check_device(sim, name, spec.shape, "sensor")
    for name, act in plugin.actuators.items():
        check_device(sim, name, act.shape, "actuator")
    # Simulated time: stamps are sim time since episode start (offset pinned at 0).
    channel = OutputChannel(
        plugin.__class__.__name__, plugin.telemetry_fields, capacity=1 << 16, wall_offset_ns=0
    )
    ctx = PluginContext(
        name=type(plugin).__name__,
        rate_hz=rate_hz,
        params=plugin.Params.model_validate(params or {}),
        model=ModelSlot(model) if model is not None else None,
        sensors={n: SimSensor(sim, n, s) for n, s in plugin.sensors.items()},
        actuators={n: SimActuator(sim, n, s) for n, s in plugin.actuators.items()},
        out=channel,
    )
    plugin.setup(ctx)
    result = LockstepResult()
    # Same simulated time per tick as under the real-time sim HAL, so a plugin sees one world.
    steps_per_tick = max(1, round(sim.realtime_speed / (rate_hz * sim.dt)))
    t0 = sim.t
    try:
        while sim.t - t0 < duration_s:
            now_ns = int((sim.t - t0) * 1e9)
            plugin.tick(now_ns)
            result.ticks += 1
            if on_tick is not None:
                on_tick(sim, now_ns)
            for _ in range(steps_per_tick):
                sim.step()
            if result.ticks % 256 == 0:
                _drain(channel, result)
        _drain(channel, result)
    finally:
        plugin.teardown()
    return result


def _drain(channel: OutputChannel, result: LockstepResult) -> None:
    result.events.extend(channel.drain_events())
    ts, rows = channel.drain_telemetry()
    result.telemetry_ts_ns.extend(int(t) for t in ts)
    result.telemetry.extend(rows.tolist())
