"""Sensor reads that survive dropouts: the last good value is held and each outage is counted."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from agent.hal.base import Sensor

F32 = npt.NDArray[np.float32]


class SensorBank:
    """Reads every sensor into its own buffers each tick without allocating.

    `values[name]` holds the last good reading (per element: a NaN element keeps its old value).
    A sensor that returns False or any NaN is down; `went_down` lists the indexes that went down
    on the last `read_all`, so the caller can report each outage once.
    """

    def __init__(self, sensors: dict[str, Sensor], initial: dict[str, float]) -> None:
        self.names = tuple(sensors)
        self.values: dict[str, F32] = {}
        self._rows: list[tuple[Sensor, F32, F32, npt.NDArray[np.bool_]]] = []
        for name, sensor in sensors.items():
            shape = sensor.spec.shape
            good = np.full(shape, initial.get(name, 0.0), np.float32)
            self.values[name] = good
            self._rows.append((sensor, np.zeros(shape, np.float32), good, np.zeros(shape, bool)))
        self.down = [False] * len(self._rows)
        self.seen = [False] * len(self._rows)
        self.went_down = [False] * len(self._rows)
        self.outages = 0

    def read_all(self) -> bool:
        """Read every sensor; True if some sensor went down on this read."""
        any_new = False
        for i in range(len(self._rows)):
            sensor, raw, good, finite = self._rows[i]
            ok = sensor.read_into(raw)
            if ok:
                # One call for the common, all-finite reading (x.dot(x) is NaN or inf when any
                # value is, or when a square overflows float32: then the per-element path below
                # decides). Each numpy call costs microseconds right after the loop's sleep.
                norm = float(raw.dot(raw))
                if norm - norm == 0.0:
                    good[...] = raw
                else:
                    np.isfinite(raw, out=finite)
                    ok = bool(finite.all())
                    np.copyto(good, raw, where=finite)
            fresh = not ok and not self.down[i]
            self.went_down[i] = fresh
            if fresh:
                self.outages += 1
                any_new = True
            self.down[i] = not ok
            self.seen[i] = self.seen[i] or ok
        return any_new
