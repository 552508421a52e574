"""Simulators for the simulator-process tests: importable by name in a child process."""

from __future__ import annotations

import ctypes
from typing import ClassVar

import numpy as np
import numpy.typing as npt

from agent.hal.base import ActuatorSpec, SensorSpec
from agent.hal.simulator import Simulator

CRASH = 666.0
"""A command of this value makes EchoSim die of SIGSEGV, as a native simulator library might."""


class EchoSim(Simulator):
    """`echo` reads the last `command` applied (NaN before the first), `steps` how many steps
    ran; `dropout` goes stale while the command is negative."""

    dt: ClassVar[float] = 0.001
    sensors: ClassVar[dict[str, SensorSpec]] = {
        "echo": SensorSpec((1,)),
        "steps": SensorSpec((1,)),
        "dropout": SensorSpec((1,)),
    }
    actuators: ClassVar[dict[str, ActuatorSpec]] = {"command": ActuatorSpec((1,))}

    def reset(self, seed: int) -> None:
        """Start at t=0 with no command."""
        self.t = 0.0
        self.command = float("nan")
        self.steps = 0

    def step(self) -> None:
        """Count the step."""
        self.t += self.dt
        self.steps += 1

    def read(self, sensor: str, out: npt.NDArray[np.float32]) -> bool:
        """The last command, the step count, or a dropout while the command is negative."""
        if sensor == "echo":
            out[0] = self.command
        elif sensor == "steps":
            out[0] = self.steps
        else:
            out[0] = self.command
            return not self.command < 0
        return True

    def actuate(self, actuator: str, value: npt.NDArray[np.float32]) -> None:
        """Keep the command; CRASH reads address 0 (SIGSEGV, no Python exception)."""
        self.command = float(value[0])
        if self.command == CRASH:
            ctypes.string_at(0)


class BrokenSim(EchoSim):
    """Fails to reset, as a simulator whose data file is missing would."""

    def reset(self, seed: int) -> None:
        """Raise."""
        raise FileNotFoundError("room layouts not found: /nowhere/rooms.json")
