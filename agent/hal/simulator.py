"""The simulator seam: a world stepped at a fixed dt, read and driven like hardware (sim HAL)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np
import numpy.typing as npt

from agent.hal.base import ActuatorSpec, SensorSpec


class Simulator(ABC):
    """A deterministic world: same seed, same trajectory."""

    dt: ClassVar[float]
    """Physics step in simulated seconds."""
    sensors: ClassVar[dict[str, SensorSpec]]
    actuators: ClassVar[dict[str, ActuatorSpec]]
    realtime_speed: ClassVar[float] = 1.0
    """Simulated seconds per wall-clock second when driven in real time (a house runs faster)."""

    t: float = 0.0

    @abstractmethod
    def reset(self, seed: int) -> None:
        """Start a new episode from `seed`."""

    @abstractmethod
    def step(self) -> None:
        """Advance the world by one `dt`."""

    @abstractmethod
    def read(self, sensor: str, out: npt.NDArray[np.float32]) -> bool:
        """Copy the sensor's current reading into `out`; False on a (simulated) dropout."""

    @abstractmethod
    def actuate(self, actuator: str, value: npt.NDArray[np.float32]) -> None:
        """Apply a command; it takes effect from the next step."""
