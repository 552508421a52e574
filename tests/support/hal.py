"""HAL contract harnesses, one per backend; the contract suite runs over every one of them.

Adding a backend to the contract suite is one line in HARNESSES: a factory taking the pytest
request (for fixtures such as a broker) and returning a `HalHarness`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np
import numpy.typing as npt
import pytest

from agent.hal.base import ActuatorSpec, HalBackend, SensorSpec
from agent.hal.sim import SimHal
from agent.hal.sim_process import SimProcessHal
from tests.support import engine as kit
from tests.support.sims import EchoSim

Array = npt.NDArray[np.float32]


class HalHarness(Protocol):
    """A backend plus a way to drive its sensor and watch its actuator from the outside."""

    backend: HalBackend
    plugin: str
    sensor: str
    sensor_spec: SensorSpec
    actuator: str
    actuator_spec: ActuatorSpec

    def inject(self, value: Array | None) -> None:
        """Make `value` the sensor's next reading; None: no fresh reading from now on."""

    def observed(self) -> Array | None:
        """The last value the outside world received from the actuator, if any yet."""

    def close(self) -> None:
        """Release whatever the harness started."""


class SimHarness:
    """The sim backend over the test kit's WaveSim (not stepped, so injected values stay)."""

    plugin = "p"
    sensor = "signal"
    sensor_spec = kit.WaveSim.sensors["signal"]
    actuator = "label"
    actuator_spec = kit.WaveSim.actuators["label"]

    def __init__(self) -> None:
        self.sim = kit.WaveSim()
        self.sim.reset(0)
        self.backend: HalBackend = SimHal({self.plugin: self.sim})

    def inject(self, value: Array | None) -> None:
        """Set the window the simulator returns, or a dropout."""
        self.sim.dropout = value is None
        if value is not None:
            self.sim.window[:] = value

    def observed(self) -> Array | None:
        """What the simulator last received."""
        return self.sim.label.copy() if self.sim.writes else None

    def close(self) -> None:
        """Stop the backend."""
        self.backend.stop()


class SimProcessHarness:
    """The sim backend with its simulator in a process of its own, over EchoSim: the outside
    world sets the sensor through the simulator's `command` (echoed back; negative: stale)."""

    plugin = "p"
    sensor = "dropout"
    sensor_spec = EchoSim.sensors["dropout"]
    actuator = "command"
    actuator_spec = EchoSim.actuators["command"]

    def __init__(self) -> None:
        backend = SimProcessHal()
        backend.bind_ref(self.plugin, "tests.support.sims:EchoSim", 0)
        self.backend: HalBackend = backend
        self._drive = backend.actuator(self.plugin, "command", self.actuator_spec)
        self._echo = backend.sensor(self.plugin, "echo", EchoSim.sensors["echo"])
        self._seen = np.zeros(1, np.float32)

    def inject(self, value: Array | None) -> None:
        """Command the simulator to echo `value`, or a negative value for a dropout."""
        self._drive.write(np.full(1, -1.0, np.float32) if value is None else value)

    def observed(self) -> Array | None:
        """The command the simulator last applied, as it echoes it."""
        if not self._echo.read_into(self._seen) or np.isnan(self._seen[0]):
            return None
        return self._seen.copy()

    def close(self) -> None:
        """Stop the backend and its process."""
        self.backend.stop()


HARNESSES: dict[str, Callable[[pytest.FixtureRequest], HalHarness]] = {
    "sim": lambda request: SimHarness(),
    "sim-process": lambda request: SimProcessHarness(),
}
