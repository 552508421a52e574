"""The host's side of an isolated plugin's devices: its real sensors' readings copied into the
shared-memory block (agent/hal/shm.py) and the commands the child wrote there applied."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from agent.hal.base import Actuator, Buffer, Sensor
from agent.hal.shm import CommandFeed, DeviceBlock


class Bridge:
    """The host's side: real sensor readings into the block, new commands out of it."""

    def __init__(
        self, block: DeviceBlock, sensors: Mapping[str, Sensor], actuators: Mapping[str, Actuator]
    ) -> None:
        self._sensors = [
            (s.read_into, block.sensors[n].write, np.zeros(s.spec.shape, np.float32))
            for n, s in sensors.items()
        ]
        self._commands = CommandFeed({n: block.actuators[n] for n in actuators})
        self._writes = {n: a.write for n, a in actuators.items()}
        self._clock = block.clock

    @property
    def idle(self) -> bool:
        """True when the plugin has no devices: nothing to bridge."""
        return not self._sensors and not self._commands

    def last_tick_ns(self) -> int:
        """When the child's latest tick started (perf_counter_ns, one clock for all processes on
        Linux); 0 before its first."""
        last: int = self._clock[0]
        return last

    def pump(self) -> None:
        """One pass: every sensor read and published, every changed command applied."""
        for read, publish, buf in self._sensors:
            publish(buf, read(buf))
        self.pump_actuators()

    def pump_actuators(self) -> None:
        """Every command the child wrote since the last pass, applied."""
        self._commands.pass_on(self._apply)

    def _apply(self, name: str, value: Buffer) -> None:
        self._writes[name](value)
