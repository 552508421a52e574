"""The safety layer: an e-stop on the lidar that sits after the model and cannot be overridden."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]


class SafetyLayer:
    """Cuts the translation of a wheel command that would drive toward a close lidar return.

    A return blocks forward (backward) motion when it is nearer than `distance`, lies ahead
    (behind) the robot, and sits inside the swept path of half-width `corridor`. Turning in
    place is always allowed: the robot is a disc, so rotation cannot bring it into contact,
    and it is how a policy steers out of an e-stop. Ray i points 360*i/n degrees CCW of heading.
    `limit` allocates nothing.
    """

    def __init__(self, n_rays: int, *, distance: float, corridor: float) -> None:
        angles = np.arange(n_rays) * (2.0 * np.pi / n_rays)
        self._abs_sin = np.abs(np.sin(angles)).astype(np.float32)
        cos = np.cos(angles)
        self._ahead = cos > 1e-6
        self._behind = cos < -1e-6
        self._lateral = np.zeros(n_rays, np.float32)
        self._blocking = np.zeros(n_rays, bool)
        self._near = np.zeros(n_rays, bool)
        self.distance = distance
        self.corridor = corridor

    def configure(self, *, distance: float, corridor: float) -> None:
        """New thresholds (m), between two ticks."""
        self.distance = distance
        self.corridor = corridor

    def blocks(self, ranges: F32, speed: float) -> bool:
        """True when moving at linear `speed` (m/s, + forward) would close on a near return."""
        if speed == 0.0:
            return False
        np.multiply(ranges, self._abs_sin, out=self._lateral)
        np.less(self._lateral, self.corridor, out=self._blocking)
        np.less(ranges, self.distance, out=self._near)
        np.logical_and(self._blocking, self._near, out=self._blocking)
        np.logical_and(
            self._blocking, self._ahead if speed > 0.0 else self._behind, out=self._blocking
        )
        return bool(self._blocking.any())
