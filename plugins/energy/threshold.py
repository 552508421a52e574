"""The baseline: a fixed-threshold step detector on the power trace, no model."""

from __future__ import annotations


class ThresholdDetector:
    """Flags a rise of at least `spike_w` from one reading to the next.

    What a meter's built-in alerting does: cheap and explainable, but every kettle or oven
    start looks like a fault to it. Its score is 1.0 on such a jump, else 0.0. A second rule
    (the recent floor well above the hour's) was tried and never raised the baseline's F1.
    """

    kind = "power_jump"

    def __init__(self, *, spike_w: float) -> None:
        self.spike_w = spike_w
        self._prev = 0.0

    def update(self, x: float) -> float:
        """Score the newest reading `x`."""
        jump = x - self._prev
        self._prev = x
        return 1.0 if jump >= self.spike_w else 0.0

    def reset(self, x: float) -> None:
        """Start over from reading `x`."""
        self._prev = x
