"""HAL contract harnesses, one per backend; the contract suite runs over every one of them.

Adding a backend to the contract suite is one line in HARNESSES: a factory taking the pytest
request (for fixtures such as a broker) and returning a `HalHarness`.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt
import pytest

_KIT = str(Path(__file__).resolve().parents[1] / "engine")
if _KIT not in sys.path:
    sys.path.insert(0, _KIT)

import engine_testkit as kit  # noqa: E402

from agent.hal.base import ActuatorSpec, HalBackend, SensorSpec  # noqa: E402
from agent.hal.sim import SimHal  # noqa: E402

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
        self.backend = SimHal({self.plugin: self.sim})

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


HARNESSES: dict[str, Callable[[pytest.FixtureRequest], HalHarness]] = {
    "sim": lambda request: SimHarness(),
}


def eventually(check: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll `check` until true (backends fed from the network answer asynchronously)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if check():
            return True
        time.sleep(0.005)
    return False
