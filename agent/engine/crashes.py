"""A plugin's crash episodes: how many, which tracebacks are worth logging, when to raise events.

An episode starts with a crash and ends once the plugin has run `stable_s` without one. Within an
episode the log gets the full traceback once per failure site and one line per further crash,
and a `plugin_failed` event goes out on the 1st, 2nd, 4th, 8th, ... crash, so a storm of any
length stays a few lines and events while the counters stay exact.
"""

from __future__ import annotations

import logging
import time
from types import TracebackType

from agent.plugin.channel import OutputChannel

log = logging.getLogger("agent.engine.runner")  # the runner's log lines, as before the split

FAILED_EVENT = "plugin_failed"
"""Event kind the host raises on the plugin's own channel when it crashes (tick or setup)."""

FailureSite = tuple[str, str, int]
"""Exception type, file and line where it was raised: what makes a traceback worth logging."""

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]


class CrashEpisodes:
    """Counts crashes in total and within the current episode; decides what gets reported."""

    def __init__(self) -> None:
        self.total = 0
        self.in_episode = 0
        self._traced: set[FailureSite] = set()

    def count(self) -> int:
        """Record one crash; returns its number within the episode."""
        self.total += 1
        self.in_episode += 1
        return self.in_episode

    def end(self) -> None:
        """The plugin ran stable: the next crash starts a new episode."""
        self.in_episode = 0
        self._traced.clear()

    def trace_once(self, error: BaseException) -> ExcInfo | None:
        """exc_info for the log the first time this episode fails at this place, else None."""
        site = failure_site(error)
        if site in self._traced:
            return None
        self._traced.add(site)
        return (type(error), error, error.__traceback__)

    def record(
        self,
        channel: OutputChannel,
        error: BaseException,
        *,
        phase: str,
        message: str,
        delay: float,
        restarts: int,
    ) -> None:
        """Count a crash of `phase` ("tick" or "setup"), log it, maybe raise `plugin_failed`.

        Called with the plugin's loop ended (or never started) under the runner's lock, so this
        thread is the channel's only producer right now, as its single-producer rule requires.
        """
        n = self.count()
        name = channel.plugin
        exc_info = self.trace_once(error)
        if phase == "setup":
            log.error(
                "plugin %s: %s (crash %d in a row); next try in %.2f s",
                name, message, n, delay, exc_info=exc_info,
            )  # fmt: skip
        elif exc_info is not None:  # always so for the first crash of an episode
            log.error(
                "plugin %s: tick raised %s; restarting in %.2f s",
                name, message, delay, exc_info=exc_info,
            )  # fmt: skip
        else:
            log.error(
                "plugin %s: tick raised %s (crash %d in a row); restarting in %.2f s",
                name, message, n, delay,
            )  # fmt: skip
        if n & (n - 1):
            return  # events on the 1st, 2nd, 4th, 8th, ... crash of the episode only
        channel.event(
            time.perf_counter_ns(),
            FAILED_EVENT,
            1.0,
            phase=phase,
            error=message,
            crashes=n,
            crashes_total=self.total,
            restarts=restarts,
            retry_in_s=round(delay, 3),
        )


def failure_site(error: BaseException) -> FailureSite:
    """Where `error` was raised: its type and the innermost frame's file and line."""
    tb = error.__traceback__
    if tb is None:
        return (type(error).__name__, "", 0)
    while tb.tb_next is not None:
        tb = tb.tb_next
    return (type(error).__name__, tb.tb_frame.f_code.co_filename, tb.tb_lineno)
