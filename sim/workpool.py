"""A few threads for the work of many devices: the `SharedWork` seam of agent/sync/lanes.py.

sim.lightfleet hosts hundreds of devices per process. Left alone, each would keep its own sync
thread, command worker, the OTA adapter's worker and stall watch, and a pipeline thread per
update: about 600 threads per worker process at 125 devices, which, woken together by one
broadcast, queued on the GIL in front of the network thread (docs/fleet.md). With a
`SharedThreads` set on those classes each device's queues become lanes on these threads, and
their periodic wake-ups timers on one timer thread.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

log = logging.getLogger(__name__)


class SharedThreads(ThreadPoolExecutor):
    """`threads` workers (a thread pool) plus one timer thread for `every`."""

    def __init__(self, threads: int, name: str) -> None:
        super().__init__(max_workers=threads, thread_name_prefix=name)
        self._name = name
        self._timers: list[tuple[float, int, float, Callable[[], None]]] = []
        self._cancelled: set[int] = set()
        self._ids = itertools.count()
        self._cond = threading.Condition()
        self._timer_thread: threading.Thread | None = None

    def every(self, seconds: float, fn: Callable[[], None]) -> Callable[[], None]:
        """Call `fn` every `seconds` from the timer thread, the first time at a random point of
        the first interval (hundreds of devices started together do not tick together);
        returns what cancels it. `fn` must be quick: it delays every other timer."""
        key = next(self._ids)
        with self._cond:
            due = time.monotonic() + random.uniform(0.0, seconds)
            heapq.heappush(self._timers, (due, key, seconds, fn))
            if self._timer_thread is None:
                self._timer_thread = threading.Thread(
                    target=self._run_timers, name=f"{self._name}-timers", daemon=True
                )
                self._timer_thread.start()
            self._cond.notify()

        def cancel() -> None:
            with self._cond:
                self._cancelled.add(key)

        return cancel

    def _run_timers(self) -> None:
        while True:
            with self._cond:
                now = time.monotonic()
                while not self._timers or self._timers[0][0] > now:
                    wait = self._timers[0][0] - now if self._timers else None
                    self._cond.wait(wait)
                    now = time.monotonic()
                due, key, seconds, fn = heapq.heappop(self._timers)
                if key in self._cancelled:
                    self._cancelled.discard(key)
                    continue
                # From the due time, not from now: a late timer thread does not drift.
                heapq.heappush(self._timers, (max(due + seconds, now), key, seconds, fn))
            try:
                fn()
            except Exception:
                log.exception("%s: timer %r failed", self._name, fn)
