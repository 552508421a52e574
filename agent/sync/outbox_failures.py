"""A failure episode of outbox writes: counted, backed off, logged once and closed by one line."""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from agent.backoff import Backoff
from agent.sync.outbox_file import OutboxError, space_note

log = logging.getLogger(__name__)

RETRY_MIN_S = 0.05
"""Back-off after the first failed write; doubled after each further failure."""
RETRY_MAX_S = 1.0
"""Longest back-off between write attempts while writes fail: bounds the recovery delay."""
LOG_EVERY_S = 60.0
"""At most one error line per this many seconds, however often writes fail."""


class WriteFailures:
    """Failed writes of one outbox: why, since when, and when the next attempt is due."""

    def __init__(self, path: Path, clock: Callable[[], float]) -> None:
        self.path = path
        self.errors = 0
        """Writes (add, ack, compaction) that failed with an SQLite error since the start."""
        self.last_error = ""
        """Why writes are failing (the latest error); empty while they succeed."""
        self.failing_since: float | None = None
        """Wall-clock time of the first failed write of the current episode (None: none)."""
        self._clock = clock
        self._backoff = Backoff(RETRY_MIN_S, RETRY_MAX_S)
        self._failed_at = 0.0  # clock time the current episode started
        self._episode_errors = 0
        self._retry_at = 0.0
        self._logged_at: float | None = None  # clock time of the last error line
        self._episode_logged = False  # an error line was logged: its recovery will be too

    def retry_due(self) -> bool:
        """False while writes fail and the back-off since the last failure has not passed yet."""
        return not self.last_error or self._clock() >= self._retry_at

    def retry_now(self) -> None:
        """Let the next write be tried at once (the last chance at shutdown)."""
        self._retry_at = 0.0

    def failed(self, what: str, exc: sqlite3.Error) -> OutboxError:
        """Record a failed write (count, reason, back-off, rate-limited log); the error to raise."""
        now = self._clock()
        message = f"outbox {what} failed ({self.path}): {exc}{space_note(self.path.parent)}"
        starts = not self.last_error
        if starts:
            self.failing_since = time.time()
            self._failed_at = now
            self._episode_errors = 0
            self._backoff.reset()
        self.errors += 1
        self._episode_errors += 1
        self.last_error = message
        self._retry_at = now + self._backoff.next()
        # The sync thread would retry every few milliseconds: one line per episode, a reminder
        # at most every LOG_EVERY_S, and flapping episodes share that budget.
        if self._logged_at is None or now - self._logged_at >= LOG_EVERY_S:
            self._logged_at = now
            self._episode_logged = True
            if starts:
                log.error("%s; retrying, messages wait in memory", message)
            else:
                log.error(
                    "%s; still failing after %.0f s (%d failed writes)",
                    message,
                    now - self._failed_at,
                    self._episode_errors,
                )
        return OutboxError(message)

    def ok(self) -> None:
        """A transaction that changed rows committed: close a failure episode, if one is open."""
        if not self.last_error:
            return
        if self._episode_logged:
            # WARNING, not INFO: as visible as the error line it closes.
            log.warning(
                "outbox writable again after %.1f s (%d failed writes)",
                self._clock() - self._failed_at,
                self._episode_errors,
            )
        self.last_error = ""
        self.failing_since = None
        self._episode_logged = False
        self._retry_at = 0.0
        self._backoff.reset()


class FailureView:
    """The failure state of an outbox, read through the outbox itself."""

    failures: WriteFailures

    @property
    def errors(self) -> int:
        """Writes that failed with an SQLite error since the start."""
        return self.failures.errors

    @property
    def last_error(self) -> str:
        """Why writes are failing (the latest error); empty while they succeed."""
        return self.failures.last_error

    @property
    def failing_since(self) -> float | None:
        """Wall-clock time the current failure episode started (None: writes succeed)."""
        return self.failures.failing_since

    def retry_due(self) -> bool:
        """False while writes fail and the back-off since the last failure has not passed yet."""
        return self.failures.retry_due()

    def retry_now(self) -> None:
        """Let the next write be tried at once (the last chance at shutdown)."""
        self.failures.retry_now()
