"""Process-wide settings the loops need while they run: GIL switch interval and GC policy."""

from __future__ import annotations

import gc
import sys
from types import TracebackType

from agent.config.sections import EngineConfig
from agent.engine.gc_slack import SlackCollector


class RealtimeMode:
    """Enter before starting loops, leave after they stop: restores what it changed.

    - `sys.setswitchinterval(engine.switch_interval_us)`: a thread waking for its deadline waits
      for the GIL at most this long (CPython's default is 5 ms).
    - gc_mode `freeze`: one full collection, `gc.freeze()` (everything allocated so far, setup
      buffers included, is never scanned again) and automatic collection off; the loops collect
      the young generations in their idle slack (agent/engine/gc_slack.py). `disabled`: automatic
      collection off and nothing collected (cyclic garbage leaks). `default`: CPython's own.
    """

    def __init__(self, engine: EngineConfig) -> None:
        self.engine = engine
        self._saved: tuple[bool, float] | None = None
        self.collector = SlackCollector() if engine.gc_mode == "freeze" else None
        """Shared by every loop when they must run the collections themselves."""

    def enter(self) -> None:
        """Apply the switch interval and GC policy."""
        if self._saved is not None:
            return
        self._saved = (gc.isenabled(), sys.getswitchinterval())
        sys.setswitchinterval(self.engine.switch_interval_us / 1e6)
        if self.engine.gc_mode == "freeze":
            gc.collect()
            gc.freeze()
            gc.disable()
        elif self.engine.gc_mode == "disabled":
            gc.disable()

    def leave(self) -> None:
        """Restore the previous switch interval and GC state."""
        if self._saved is None:
            return
        enabled, interval = self._saved
        sys.setswitchinterval(interval)
        if self.engine.gc_mode == "freeze":
            gc.unfreeze()
        if enabled:
            gc.enable()
        self._saved = None

    def __enter__(self) -> RealtimeMode:
        self.enter()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.leave()
