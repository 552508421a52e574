"""The plugin seam: what a domain plugin declares and the lifecycle the host drives."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

from pydantic import BaseModel, ConfigDict

from agent.hal.base import Actuator, ActuatorSpec, Sensor, SensorSpec
from agent.plugin.channel import OutputChannel
from agent.runtime.base import Model
from agent.runtime.slot import ModelSlot


class PluginParams(BaseModel):
    """Base of every plugin's params model: unknown keys rejected, values validated."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


@dataclass(slots=True)
class PluginContext:
    """Everything the host hands a plugin: it needs nothing else from the outside world."""

    name: str
    rate_hz: float
    params: PluginParams
    model: ModelSlot | None
    sensors: dict[str, Sensor]
    actuators: dict[str, Actuator]
    out: OutputChannel


class Plugin(ABC):
    """A domain plugin: reads sensors, runs its model and drives actuators at a fixed rate.

    The host calls `setup` once (allocate every buffer here), then `tick` at `rate_hz` from the
    plugin's own loop thread, `apply_params` between two ticks when params change, and
    `teardown` at stop. `tick` is the hot path: no allocation, I/O, locks, logging or sleeping.
    A plugin never talks MQTT or opens files: its outputs go to `ctx.out`.
    """

    Params: ClassVar[type[PluginParams]] = PluginParams
    sensors: ClassVar[dict[str, SensorSpec]] = {}
    actuators: ClassVar[dict[str, ActuatorSpec]] = {}
    telemetry_fields: ClassVar[tuple[str, ...]] = ()
    default_model: ClassVar[str | None] = None
    default_rate_hz: ClassVar[float] = 100.0
    simulator: ClassVar[str | None] = None
    """`module:Class` of the simulator the sim HAL binds this plugin to."""

    @classmethod
    def for_params(cls, params: PluginParams) -> type[Plugin]:
        """The class the host runs with `params`; a generic plugin declares devices from them."""
        return cls

    @abstractmethod
    def setup(self, ctx: PluginContext) -> None:
        """Keep the context, allocate buffers, read initial params."""

    @abstractmethod
    def tick(self, now_ns: int) -> None:
        """One control step at perf_counter_ns `now_ns`."""

    def apply_params(self, params: PluginParams) -> None:  # noqa: B027 - optional hook
        """Take new, already validated params; called on the loop thread between ticks."""

    def check_model(self, model: Model) -> None:  # noqa: B027 - optional hook
        """Raise ModelError if `model` cannot serve this plugin (OTA validation)."""

    def teardown(self) -> None:  # noqa: B027 - optional hook
        """Release what setup took."""
