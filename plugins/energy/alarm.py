"""Turning a per-tick anomaly score into rare alarms: confirmation and hysteresis."""

from __future__ import annotations


class AlarmLogic:
    """Fires once after `confirm` scores >= `threshold`; re-arms after `rearm` scores < `release`.

    One alarm per anomaly episode, however long the anomaly lasts. sim/energy/metrics.py has a
    batch twin (`alarms_from_scores`) used to tune these values in training; keep them in step.
    """

    def __init__(self, *, threshold: float, release: float, confirm: int, rearm: int) -> None:
        self.threshold = threshold
        self.release = release
        self.confirm = confirm
        self.rearm = rearm
        self.active = False
        self._above = 0
        self._below = 0

    def update(self, score: float) -> bool:
        """Take one score; True when an alarm fires on it."""
        self._above = self._above + 1 if score >= self.threshold else 0
        if not self.active:
            if self._above >= self.confirm:
                self.active = True
                self._below = 0
                return True
            return False
        self._below = self._below + 1 if score < self.release else 0
        if self._below >= self.rearm:
            self.active = False
        return False

    def reset(self) -> None:
        """Forget any alarm in progress."""
        self.active = False
        self._above = 0
        self._below = 0
