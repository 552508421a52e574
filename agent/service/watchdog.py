"""The systemd watchdog, fed only while every running loop is really ticking."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from agent.service.notify import Notifier

log = logging.getLogger(__name__)

HealthCheck = Callable[[], str | None]
"""Returns None when healthy, else a one-line reason."""


def loops_ticking(counters: Callable[[], dict[str, int]]) -> HealthCheck:
    """A check that fails when a loop's tick counter has not moved since the previous call.

    `counters` lists only live loops (PluginHost.tick_counters): a plugin crashing again and
    again is in the supervisor's hands (backoff, restart) and does not withhold the pings, which
    would get systemd to kill the healthy loops with it; a loop stuck inside a tick does.
    """
    last: dict[str, int] = {}

    def check() -> str | None:
        now = counters()
        stuck = [name for name, n in now.items() if name in last and last[name] == n]
        last.clear()
        last.update(now)
        return f"loops not ticking: {', '.join(sorted(stuck))}" if stuck else None

    return check


class Watchdog:
    """Pings WATCHDOG=1 every half period while all checks pass; a stuck loop stops the pings.

    Stopping the pings is the whole point: systemd then kills and restarts the agent
    (Restart=on-failure), which is the recovery a stuck loop in a thread cannot do itself.
    """

    def __init__(
        self,
        notifier: Notifier,
        checks: list[HealthCheck],
        *,
        period_s: float | None = None,
        status: Callable[[], str] | None = None,
    ) -> None:
        self._notifier = notifier
        self._checks = checks
        self._period = period_s or (notifier.watchdog_s or 0.0) / 2
        self._status = status
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.pings = 0
        self.last_failure: str | None = None

    def start(self) -> None:
        """Start pinging (a no-op when systemd set no watchdog and no period was given)."""
        if self._period <= 0:
            return
        self._thread = threading.Thread(target=self._run, name="watchdog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop pinging."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)

    def check_once(self) -> str | None:
        """Run every check; ping when all pass. Returns the first failure reason, if any."""
        for check in self._checks:
            reason = check()
            if reason is not None:
                if reason != self.last_failure:
                    log.error("watchdog withheld: %s", reason)
                self.last_failure = reason
                self._notifier.status(f"unhealthy: {reason}")
                return reason
        self.last_failure = None
        self._notifier.watchdog()
        self.pings += 1
        if self._status is not None:
            self._notifier.status(self._status())
        return None

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self._stop.wait(max(0.0, next_at - time.monotonic())):
            self.check_once()
            next_at += self._period
