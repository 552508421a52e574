"""The HAL seam: sensors read into preallocated buffers, actuators take values."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Buffer = npt.NDArray[np.float32]
FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclass(frozen=True, slots=True)
class SensorSpec:
    """What a plugin expects from one sensor, including the range of a plausible reading.

    A backend fed from outside (MQTT) turns a reading that is not finite or lies outside
    [low, high] into a dropout: one `1e39` from a broken meter must not poison running totals.
    """

    shape: tuple[int, ...]
    unit: str = ""
    description: str = ""
    low: float = -FLOAT32_MAX
    """Smallest plausible value of every element."""
    high: float = FLOAT32_MAX
    """Largest plausible value of every element."""

    def implausible(self, values: Buffer) -> str:
        """Why `values` cannot be a reading of this sensor ('' when they can); not for hot loops."""
        if not np.isfinite(values).all():
            return "not a finite number"
        if values.size and (float(values.min()) < self.low or float(values.max()) > self.high):
            lo, hi = float(values.min()), float(values.max())
            return f"outside the sensor's range [{self.low:g}, {self.high:g}] (got {lo:g}..{hi:g})"
        return ""


@dataclass(frozen=True, slots=True)
class ActuatorSpec:
    """What a plugin drives through one actuator."""

    shape: tuple[int, ...]
    unit: str = ""
    description: str = ""


class Sensor(ABC):
    """A source of readings; `read_into` is called from the hot loop."""

    spec: SensorSpec

    @abstractmethod
    def read_into(self, out: Buffer) -> bool:
        """Copy the latest reading into `out`; False when there is none fresh (dropout, stale)."""


class Actuator(ABC):
    """A sink of commands; `write` is called from the hot loop and must not block."""

    spec: ActuatorSpec

    @abstractmethod
    def write(self, value: Buffer) -> None:
        """Apply `value` (shape `spec.shape`); copies, so the caller may reuse its buffer."""


class HalBackend(ABC):
    """Creates the devices of one backend (sim, mqtt, ...) for the plugins that need them."""

    @abstractmethod
    def sensor(self, plugin: str, name: str, spec: SensorSpec) -> Sensor:
        """The sensor `name` of plugin `plugin`; raises HalError if it cannot be provided."""

    @abstractmethod
    def actuator(self, plugin: str, name: str, spec: ActuatorSpec) -> Actuator:
        """The actuator `name` of plugin `plugin`; raises HalError if it cannot be provided."""

    def start(self) -> None:  # noqa: B027 - optional hook
        """Start background work (simulator stepping, subscriptions)."""

    def stop(self) -> None:  # noqa: B027 - optional hook
        """Stop background work."""
