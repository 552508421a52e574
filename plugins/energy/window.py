"""The sliding power window behind the model input, kept in preallocated rings."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from plugins.energy.const import BLOCK, COARSE, FINE

F32 = npt.NDArray[np.float32]


class _Ring:
    """Fixed-length history with a contiguous oldest-to-newest view at every position.

    Each value is stored twice (at i and i + n), so `window()` is always one contiguous slice;
    the slices are made once here, so reading the window allocates nothing.
    """

    def __init__(self, n: int) -> None:
        self._n = n
        self._buf: F32 = np.zeros(2 * n, np.float32)
        self._views = [self._buf[i : i + n] for i in range(n)]
        self._head = 0  # index of the oldest value

    def fill(self, x: float) -> None:
        """Make every slot `x`."""
        self._buf.fill(x)

    def push(self, x: float) -> None:
        """Replace the oldest value with `x`."""
        h = self._head
        self._buf[h] = x
        self._buf[h + self._n] = x
        self._head = h + 1 if h + 1 < self._n else 0

    def window(self) -> F32:
        """Oldest to newest, a view valid until the next push."""
        return self._views[self._head]


class PowerWindow:
    """Last FINE readings and the minima of the last COARSE BLOCK-tick blocks, in watts.

    Readings below 0 W (export) are clamped to 0 for the detector; aggregates use them as read.
    """

    def __init__(self) -> None:
        self._fine = _Ring(FINE)
        self._coarse = _Ring(COARSE)
        self._block_min = 0.0
        self._in_block = 0
        self.primed = False

    def prime(self, x: float) -> None:
        """Start from a history that was `x` throughout (the first reading)."""
        x = x if x > 0.0 else 0.0
        self._fine.fill(x)
        self._coarse.fill(x)
        self._block_min = np.inf
        self._in_block = 0
        self.primed = True

    def push(self, x: float) -> bool:
        """Add one reading; True when it completed a block."""
        x = x if x > 0.0 else 0.0
        self._fine.push(x)
        if x < self._block_min:
            self._block_min = x
        self._in_block += 1
        if self._in_block < BLOCK:
            return False
        self._coarse.push(self._block_min)
        self._block_min = np.inf
        self._in_block = 0
        return True

    def fine(self) -> F32:
        """Latest FINE readings, oldest first (a view)."""
        return self._fine.window()

    def coarse(self) -> F32:
        """Latest COARSE block minima, oldest first (a view)."""
        return self._coarse.window()

    def write_sqrt(self, fine_out: F32, coarse_out: F32) -> None:
        """Fill the model input: square roots of the window (the model's input units)."""
        np.sqrt(self._fine.window(), out=fine_out)
        np.sqrt(self._coarse.window(), out=coarse_out)
