"""A generic signal source for the sim HAL: any sensor name is a channel of periodic signal.

Each channel cycles through sine, square, triangle and sawtooth, one shape per `SEGMENT_S`
seconds, at a frequency, amplitude and offset drawn from the seed and the channel's name, with
a little noise. It backs the model runner (whatever channels its config names) and gives the
shipped `waveform_classifier` a known answer: the shape of the current segment.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterator, Mapping
from typing import ClassVar

import numpy as np
import numpy.typing as npt

from agent.hal.base import ActuatorSpec, SensorSpec
from agent.hal.simulator import Simulator

SEGMENT_S = 4.0
SHAPES = ("sine", "square", "triangle", "sawtooth")
_ONE = SensorSpec((1,), "", "periodic signal")


class _AnyChannel(Mapping[str, SensorSpec]):
    """Every name is a one-value channel (the sim HAL looks devices up by name)."""

    def __getitem__(self, name: str) -> SensorSpec:
        return _ONE

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str)


def shape_at(t: float) -> int:
    """Index into SHAPES of the shape every channel plays at time `t`."""
    return int(t // SEGMENT_S) % len(SHAPES)


class SignalSimulator(Simulator):
    """Periodic signals on any number of named channels; no actuators."""

    dt: ClassVar[float] = 0.001
    sensors: ClassVar[dict[str, SensorSpec]] = _AnyChannel()  # type: ignore[assignment]
    actuators: ClassVar[dict[str, ActuatorSpec]] = {}

    def reset(self, seed: int) -> None:
        """Start at t = 0 with this seed."""
        self.t = 0.0
        self._seed = seed
        self._rng = np.random.default_rng(seed)
        self._channels: dict[str, tuple[float, float, float, float]] = {}
        self.dropout: set[str] = set()
        """Channels that read as missing (tests set it)."""

    def step(self) -> None:
        """Advance time; the signal is a function of time, so nothing else moves."""
        self.t += self.dt

    def _channel(self, name: str) -> tuple[float, float, float, float]:
        found = self._channels.get(name)
        if found is None:
            rng = np.random.default_rng([self._seed, zlib.crc32(name.encode())])
            # 16 samples at 50 Hz see 1-2.5 periods: inside what waveform_classifier learned.
            found = (
                float(rng.uniform(3.0, 7.0)),
                float(rng.uniform(0.0, 1.0)),
                float(rng.uniform(0.7, 1.5)),
                float(rng.uniform(-0.3, 0.3)),
            )
            self._channels[name] = found
        return found

    def value(self, name: str, t: float) -> float:
        """The noiseless signal of channel `name` at time `t`."""
        freq, phase, amplitude, offset = self._channel(name)
        u = (freq * t + phase) % 1.0
        kind = shape_at(t)
        if kind == 0:
            y = math.sin(2 * math.pi * u)
        elif kind == 1:
            y = 1.0 if u < 0.5 else -1.0
        elif kind == 2:
            y = 4 * abs(u - 0.5) - 1
        else:
            y = 2 * u - 1
        return y * amplitude + offset

    def read(self, sensor: str, out: npt.NDArray[np.float32]) -> bool:
        """The channel's value now, with noise; False while the channel is in `dropout`."""
        if sensor in self.dropout:
            return False
        out[0] = self.value(sensor, self.t) + 0.03 * float(self._rng.standard_normal())
        return True

    def actuate(self, actuator: str, value: npt.NDArray[np.float32]) -> None:
        """There are no actuators."""
        raise KeyError(actuator)
