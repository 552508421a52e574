"""A few threads for the work of many devices: the `SharedWork` seam of agent/sync/lanes.py.

sim.lightfleet hosts hundreds of devices per process. Left alone, each would keep its own sync
thread, command worker, the OTA adapter's worker and stall watch, and a pipeline thread per
update: about 600 threads per worker process at 125 devices, which, woken together by one
broadcast, queued on the GIL in front of the network thread (docs/fleet.md). With a
`SharedThreads` set on those classes each device's queues become lanes on these threads, and
their periodic wake-ups timers on one timer thread.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

log = logging.getLogger(__name__)

WORK_THREADS = 4
"""Shared threads per worker process for every device's sync turns, commands and OTA messages
(they mostly wait on SQLite and the socket, not the CPU)."""


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
        self._closed = False

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop the timers, then the pool (`concurrent.futures.Executor.shutdown`)."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        super().shutdown(wait=wait, cancel_futures=cancel_futures)

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
                while not self._closed and (not self._timers or self._timers[0][0] > now):
                    wait = self._timers[0][0] - now if self._timers else None
                    self._cond.wait(wait)
                    now = time.monotonic()
                if self._closed:
                    return
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


@contextlib.contextmanager
def shared_threads(tick_s: float) -> Iterator[None]:
    """Set this process's seams: one network thread for every link, sync turns every `tick_s`
    when idle, `WORK_THREADS` shared
    threads for every device's sync turns, commands and OTA messages, and as many for OTA
    pipelines as sandbox children may run at once. Per device: no thread at all. Put back as
    they were on exit (a test hosting light devices in its own process)."""
    from agent.ota.mqtt import OtaMqttAdapter
    from agent.ota.receiver import OtaReceiver
    from agent.ota.sandbox import MAX_CHILDREN
    from agent.sync.commands import CommandWorker
    from agent.sync.service import SyncService
    from agent.transport.link import MqttLink
    from sim.netloop import NetLoop

    net = NetLoop()
    work = SharedThreads(WORK_THREADS, "shared-work")
    # Their own threads: a pipeline blocks for the whole model check, and the work threads must
    # stay free for pings and chunks meanwhile.
    pipelines = SharedThreads(MAX_CHILDREN, "ota-pipeline")
    seams: list[tuple[type, str, Any]] = [
        (MqttLink, "driver", net),
        (SyncService, "tick_s", tick_s),
        (SyncService, "shared", work),
        (CommandWorker, "shared", work),
        (OtaMqttAdapter, "shared", work),
        (OtaReceiver, "shared", pipelines),
    ]
    saved = [(cls, attr, getattr(cls, attr)) for cls, attr, _ in seams]
    for cls, attr, value in seams:
        setattr(cls, attr, value)
    try:
        yield
    finally:
        for cls, attr, value in saved:
            setattr(cls, attr, value)
        net.close()
        work.shutdown(wait=False)
        pipelines.shutdown(wait=False)
