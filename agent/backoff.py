"""Exponential back-off: the one delay policy for reconnects, restarts and failing writes."""

from __future__ import annotations

import random

_MAX_DOUBLINGS = 64
"""Past this many doublings every delay is at its maximum: keeps `2.0 ** n` finite."""


class Backoff:
    """Delays from `initial` doubling up to `maximum`; `reset()` starts over.

    With `jitter` each delay is drawn in [d/2, d]: a fleet reconnecting after a broker restart
    spreads out instead of arriving as one herd.
    """

    def __init__(
        self,
        initial: float,
        maximum: float,
        *,
        jitter: bool = False,
        rng: random.Random | None = None,
    ) -> None:
        self.initial = initial
        self.maximum = max(initial, maximum)
        self.attempt = 0
        """Delays handed out since the last reset."""
        self._jitter = jitter
        self._rng = rng or random.Random()

    def next(self) -> float:
        """The delay before the coming attempt; the one after is up to twice as long."""
        ceiling = min(self.maximum, self.initial * 2.0 ** min(self.attempt, _MAX_DOUBLINGS))
        self.attempt += 1
        if not self._jitter:
            return ceiling
        return ceiling * (0.5 + 0.5 * self._rng.random())

    def reset(self) -> None:
        """Start over from `initial` (after a success)."""
        self.attempt = 0
