"""Supervision policy: restart backoff, overrun watch, and the thread that applies them.

The supervisor never touches a loop's hot path: it reads the loop's plain counters and acts on
the plugin from its own thread (teardown, fresh setup, a rate change through the mailbox).
It is also the GC safety net: when automatic collection is off and no loop found slack for a
while, it runs a young-generation collection itself.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Protocol

from agent.backoff import Backoff as _Backoff

log = logging.getLogger(__name__)

GC_FALLBACK_FACTOR = 20
"""Collect from the supervisor when gen-0 holds this many thresholds' worth of objects."""


class Backoff(_Backoff):
    """Restart delays (the shared exponential back-off), reset after a stable run."""

    def __init__(self, initial: float, maximum: float, *, stable_s: float) -> None:
        super().__init__(initial, maximum)
        self.stable_s = stable_s

    def next_delay(self) -> float:
        """The delay before the coming restart; the one after is twice as long."""
        return self.next()

    def running_since(self, started_at: float, now: float) -> bool:
        """Reset the delay once the plugin has run `stable_s` without failing; True if it has."""
        if now - started_at >= self.stable_s:
            self.reset()
            return True
        return False


class OverrunWatch:
    """Tells, once per window, whether the share of overrun ticks exceeded `ratio`."""

    def __init__(self, ratio: float, *, window_s: float, min_ticks: int = 10) -> None:
        self.ratio = ratio
        self.window_s = window_s
        self.min_ticks = min_ticks
        self._start: tuple[float, int, int] | None = None
        self.share = 0.0

    def restart(self) -> None:
        """Start a fresh window (after a restart or a rate change)."""
        self._start = None

    def update(self, now: float, ticks: int, overruns: int) -> bool | None:
        """None until a window is complete; then True when it overran too often."""
        if self._start is None:
            self._start = (now, ticks, overruns)
            return None
        t0, ticks0, over0 = self._start
        if now - t0 < self.window_s:
            return None
        self._start = (now, ticks, overruns)
        done = ticks - ticks0
        if done < self.min_ticks:
            return None
        self.share = (overruns - over0) / done
        return self.share > self.ratio


MIN_RATE_HZ = 0.1
"""Overrun rate reduction never goes below this."""
FIRST_TICK_GRACE_S = 1.0
"""A fresh loop is not judged stuck before its first tick until it has run this long: after a
restart, the new loop's counter may still equal what the crashed one had reached."""


class Supervised(Protocol):
    """Something the supervisor checks periodically."""

    def supervise(self, now: float) -> None:
        """Detect failures, restart when due, watch overruns; never raises."""


class Supervisor:
    """A thread calling `supervise(now)` on every target every `interval_s`."""

    def __init__(
        self,
        targets: Callable[[], Iterable[Supervised]],
        *,
        interval_s: float = 0.05,
        gc_fallback: bool = False,
    ) -> None:
        self._targets = targets
        self._interval = interval_s
        self._gc_fallback = gc_fallback
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.gc_collections = 0

    def start(self) -> None:
        """Start the supervisor thread."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="supervisor", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 1.0) -> None:
        """Stop the thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        threshold = max(gc.get_threshold()[0], 1) * GC_FALLBACK_FACTOR
        while not self._stop.wait(self._interval):
            now = time.monotonic()
            for target in list(self._targets()):
                try:
                    target.supervise(now)
                except Exception:  # a bug here must not stop supervision of the others
                    log.exception("supervisor: check failed")
            if self._gc_fallback and gc.get_count()[0] > threshold:
                gc.collect(0)
                self.gc_collections += 1
