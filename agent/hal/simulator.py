"""The simulator seam: a world stepped at a fixed dt, read and driven like hardware (sim HAL),
and the seam of the backends that host simulators (in the agent's process or one of their own)."""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np
import numpy.typing as npt

from agent.errors import HalError
from agent.hal.base import ActuatorSpec, HalBackend, SensorSpec


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


def simulator_class(ref: str) -> type[Simulator]:
    """The simulator class named `module:Class`; HalError if there is none."""
    module, _, name = ref.partition(":")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise HalError(f"simulator {ref!r} not found: {exc}") from None
    if not (isinstance(cls, type) and issubclass(cls, Simulator)):
        raise HalError(f"simulator {ref!r} is not a Simulator class")
    return cls


def load_simulator(ref: str, seed: int) -> Simulator:
    """Instantiate the simulator named `module:Class` and reset it with `seed`."""
    sim = simulator_class(ref)()
    sim.reset(seed)
    return sim


def check_device(
    sim: type[Simulator] | Simulator, name: str, want: tuple[int, ...], kind: str
) -> None:
    """Raise HalError unless the simulator offers device `name` with shape `want`."""
    table = sim.sensors if kind == "sensor" else sim.actuators
    spec = table.get(name)
    label = sim.__name__ if isinstance(sim, type) else type(sim).__name__
    if spec is None:
        raise HalError(f"{label} has no {kind} {name!r} (has {sorted(table)})")
    if tuple(spec.shape) != tuple(want):
        raise HalError(f"{kind} {name!r}: simulator shape {spec.shape}, plugin expects {want}")


class SimBackend(HalBackend):
    """A HAL backend whose devices belong to one simulator per plugin."""

    @abstractmethod
    def bind_ref(self, plugin: str, ref: str, seed: int) -> None:
        """Give `plugin` a new simulator of class `ref` (`module:Class`), reset with `seed`."""

    @abstractmethod
    def is_bound(self, plugin: str) -> bool:
        """True when `plugin` has a simulator."""

    @abstractmethod
    def unbind(self, plugin: str) -> None:
        """Stop and forget the simulator of `plugin`."""
