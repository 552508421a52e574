"""The plugin output channel: bounded, non-blocking, lock-free rings drained by the sync thread."""

from __future__ import annotations

import time
from collections import deque
from typing import Any

import numpy as np
import numpy.typing as npt

from agent.events import Event

_OFFSET_READ_MAX_NS = 50_000
"""A wall-offset reading whose bracketing perf_counter reads are further apart is discarded."""


class OutputChannel:
    """Single producer (the plugin's loop), single consumer (the sync thread).

    Telemetry rows go into a preallocated float64 ring, so emitting allocates nothing; when the
    ring is full the new row is dropped and counted. Events are rare and carry free-form data;
    they go into a ring of references and are never dropped silently: a full ring counts
    `events_dropped`, which status and metrics report. Correctness without locks rests on one
    writer per index (the producer owns `_t_head`/`_e_head`, the consumer `_t_tail`/`_e_tail`)
    and on CPython making each integer store atomic.
    """

    def __init__(
        self,
        plugin: str,
        fields: tuple[str, ...],
        *,
        capacity: int = 4096,
        events: int = 1024,
        wall_offset_ns: int | None = None,
    ) -> None:
        self.plugin = plugin
        self.fields = fields
        self._rows: npt.NDArray[np.float64] = np.zeros((capacity, len(fields)), np.float64)
        self._ts: npt.NDArray[np.int64] = np.zeros(capacity, np.int64)
        self._t_cap = capacity
        self._t_head = 0
        self._t_tail = 0
        self._events: list[Event | None] = [None] * events
        self._e_cap = events
        self._e_head = 0
        self._e_tail = 0
        self._t_dropped = 0
        self.events_dropped = 0
        self.recent: deque[Event] | None = None
        """Set to a bounded deque by a viewer (the live view) to keep the last events drained;
        filled on the consumer's side, so the producer's hot path is unchanged. None: nothing
        kept, every event freed once drained."""
        # perf_counter_ns -> wall-clock ns, read by the hot path without a syscall. The consumer
        # refreshes it at every drain, so stamps follow a stepped wall clock (NTP on a board
        # without an RTC); one int store is atomic in CPython, so the producer needs no lock.
        # A given offset is pinned instead (simulated time: the lockstep harness passes 0).
        self._follow_wall = wall_offset_ns is None
        if wall_offset_ns is None:
            wall_offset_ns = time.time_ns() - time.perf_counter_ns()
        self._wall_offset_ns = wall_offset_ns

    def _refresh_wall_offset(self) -> None:
        if not self._follow_wall:
            return
        before = time.perf_counter_ns()
        wall = time.time_ns()
        after = time.perf_counter_ns()
        # Preempted between the reads (a VM pause): the offset would be off by up to the pause,
        # so keep the previous one; the next drain tries again.
        if after - before < _OFFSET_READ_MAX_NS:
            self._wall_offset_ns = wall - (before + after) // 2

    def wall_ns(self, perf_ns: int) -> int:
        """Wall-clock nanoseconds for a perf_counter_ns reading."""
        return perf_ns + self._wall_offset_ns

    def telemetry(self, now_ns: int, values: npt.ArrayLike) -> bool:
        """Queue one telemetry row (one value per field); False if the ring was full."""
        head = self._t_head
        if head - self._t_tail >= self._t_cap:
            self._t_dropped += 1
            return False
        slot = head % self._t_cap
        self._rows[slot] = values
        self._ts[slot] = now_ns + self._wall_offset_ns
        self._t_head = head + 1
        return True

    def event(self, now_ns: int, kind: str, score: float = 1.0, **data: Any) -> bool:
        """Queue an event; False (and counted) if the ring was full."""
        head = self._e_head
        if head - self._e_tail >= self._e_cap:
            self.events_dropped += 1
            return False
        self._events[head % self._e_cap] = Event(
            self.plugin, kind, now_ns + self._wall_offset_ns, float(score), data
        )
        self._e_head = head + 1
        return True

    def drain_telemetry(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
        """Take every queued row: (wall-clock ns per row, rows); copies, so the ring can refill."""
        tail, head = self._t_tail, self._t_head
        idx = np.arange(tail, head) % self._t_cap
        out = (self._ts[idx].copy(), self._rows[idx].copy())
        self._t_tail = head
        self._refresh_wall_offset()
        return out

    def drain_events(self) -> list[Event]:
        """Take every queued event, oldest first."""
        tail, head = self._e_tail, self._e_head
        out: list[Event] = []
        for i in range(tail, head):
            slot = i % self._e_cap
            ev = self._events[slot]
            self._events[slot] = None
            if ev is not None:
                out.append(ev)
        self._e_tail = head
        self._refresh_wall_offset()
        if self.recent is not None:
            self.recent.extend(out)
        return out

    @property
    def telemetry_dropped(self) -> int:
        """Rows refused so far because the ring was full (status and metrics report it)."""
        return self._t_dropped

    @property
    def pending(self) -> tuple[int, int]:
        """(telemetry rows, events) waiting to be drained."""
        return (self._t_head - self._t_tail, self._e_head - self._e_tail)
