"""Model features: sensor readings summed into five-minute bins, the last hour kept in a ring.

Numpy only (the training script imports this module from the TensorFlow venv, so the model
sees exactly the features the plugin computes). Every buffer is allocated in `__init__`;
`add`, `close` and `window_into` allocate nothing.

One bin row, per room r of R: motion share (0-1), mean CO2 above 400 ppm in thousands of ppm,
window-open share (0-1); then sin and cos of the hour of day and a weekend flag. The units keep
every feature within about [-1, 3], so the int8 input quantization (one scale for the whole
tensor) loses nothing; the standardization itself is a layer inside the model.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

BIN_MINUTES = 5.0
WINDOW_BINS = 12
"""One hour of history."""
TIME_FEATURES = 3

Array = npt.NDArray[np.float32]


def n_features(rooms: int) -> int:
    """Width of one bin row."""
    return 3 * rooms + TIME_FEATURES


def bin_index(hour: float, weekday: float) -> int:
    """Number of the five-minute bin within the week; changes mark a bin's end."""
    return int((weekday * 24.0 + hour) * 60.0 // BIN_MINUTES)


class FeatureBins:
    """Accumulates readings of `batch` houses and turns them into one feature row per bin."""

    def __init__(self, rooms: int, batch: int = 1, bins: int = WINDOW_BINS) -> None:
        self.rooms = rooms
        self.bins = bins
        shape = (batch, rooms)
        self._motion = np.zeros(shape, np.float32)
        self._window = np.zeros(shape, np.float32)
        self._co2 = np.zeros(shape, np.float32)
        self.count = 0
        self.row = np.zeros((batch, n_features(rooms)), np.float32)
        r = rooms
        self._row_motion = self.row[:, 0:r]
        self._row_co2 = self.row[:, r : 2 * r]
        self._row_window = self.row[:, 2 * r : 3 * r]
        self._row_sin = self.row[:, 3 * r]
        self._row_cos = self.row[:, 3 * r + 1]
        self._row_weekend = self.row[:, 3 * r + 2]
        # The ring holds every row twice, so the last `bins` rows in time order are always one
        # contiguous slice: `_views[head]`.
        self._ring = np.zeros((batch, 2 * bins, n_features(rooms)), np.float32)
        self._slots = [(self._ring[:, i], self._ring[:, i + bins]) for i in range(bins)]
        self._views = [self._ring[:, i : i + bins] for i in range(bins)]
        self._head = 0
        self.filled = 0

    def add(self, motion: Array, window: Array, co2: Array) -> None:
        """Add one reading of each per-room sensor (shape (rooms,) or (batch, rooms))."""
        np.add(self._motion, motion, out=self._motion)
        np.add(self._window, window, out=self._window)
        np.add(self._co2, co2, out=self._co2)
        self.count += 1

    def close(self, hour: float, weekend: float | npt.NDArray[np.float32]) -> None:
        """End the bin at local `hour`: compute its row, push it into the ring, reset sums."""
        inv = 1.0 / max(self.count, 1)
        np.multiply(self._motion, inv, out=self._row_motion)
        np.multiply(self._window, inv, out=self._row_window)
        np.multiply(self._co2, inv * 1e-3, out=self._row_co2)
        np.subtract(self._row_co2, 0.4, out=self._row_co2)
        angle = 2.0 * math.pi * hour / 24.0
        self._row_sin.fill(math.sin(angle))
        self._row_cos.fill(math.cos(angle))
        np.copyto(self._row_weekend, weekend)
        self._motion.fill(0.0)
        self._window.fill(0.0)
        self._co2.fill(0.0)
        self.count = 0
        self.push(self.row)

    def push(self, row: Array) -> None:
        """Append a finished row (batch, features); on the very first row, fill the history."""
        if self.filled == 0:
            for a, b in self._slots:
                np.copyto(a, row)
                np.copyto(b, row)
        else:
            a, b = self._slots[self._head]
            np.copyto(a, row)
            np.copyto(b, row)
        self._head = (self._head + 1) % self.bins
        self.filled += 1

    def window_into(self, out: Array) -> None:
        """Copy the last `bins` rows, oldest first, into `out` (batch, bins, features)."""
        np.copyto(out, self._views[self._head])
