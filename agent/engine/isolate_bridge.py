"""The host's side of an isolated plugin's devices: its real sensors' readings copied into the
shared-memory block (agent/hal/shm.py) and the commands the child wrote there applied."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from agent.hal.base import Actuator, Sensor
from agent.hal.shm import DeviceBlock


class Bridge:
    """The host's side: real sensor readings into the block, new commands out of it."""

    def __init__(
        self, block: DeviceBlock, sensors: Mapping[str, Sensor], actuators: Mapping[str, Actuator]
    ) -> None:
        self._sensors = [
            (s.read_into, block.sensors[n].write, np.zeros(s.spec.shape, np.float32))
            for n, s in sensors.items()
        ]
        self._actuators = [
            (block.actuators[n], a.write, np.zeros(block.actuators[n].values.shape, np.float32))
            for n, a in actuators.items()
        ]
        self._seen = [0] * len(self._actuators)
        self._clock = block.clock

    @property
    def idle(self) -> bool:
        """True when the plugin has no devices: nothing to bridge."""
        return not self._sensors and not self._actuators

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
        for i, (shared, write, buf) in enumerate(self._actuators):
            seq = shared.seq
            if seq != self._seen[i] and shared.read(buf):
                self._seen[i] = seq
                write(buf)
