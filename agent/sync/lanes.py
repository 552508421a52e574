"""Serial work on shared threads, for a process that hosts many devices.

The agent gives each of its work queues (commands, OTA messages, an update's pipeline) a thread
of its own. A fleet simulator hosting hundreds of devices in one process (sim.lightfleet) sets a
`SharedWork` on the classes that own those queues (`CommandWorker.shared`,
`OtaMqttAdapter.shared`, `OtaReceiver.shared`): each queue then becomes a `Lane` whose items
still run one at a time in arrival order, on whichever shared thread is free. Why: hundreds of
threads per process woken at once by one broadcast (a fleet-wide ping, an OTA chunk) queued on
the GIL in front of the one network thread, and links missed their keepalive (docs/fleet.md).
Left unset (the agent), nothing here runs.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, wait
from typing import Any, Protocol

log = logging.getLogger(__name__)

BATCH = 8
"""Items a lane runs before it goes to the back of the shared queue: one busy device (a burst
of OTA chunks) does not keep the others' commands waiting."""


class SharedWork(Protocol):
    """A few threads running many devices' work (a `concurrent.futures.Executor` plus timers)."""

    def submit(self, fn: Callable[..., Any], /, *args: Any) -> Future[Any]:
        """Run `fn(*args)` soon on a shared thread."""

    def every(self, seconds: float, fn: Callable[[], None]) -> Callable[[], None]:
        """Call `fn` every `seconds` (it must be quick); returns what cancels it."""


class Lane:
    """A bounded queue whose items `run` takes one at a time, in arrival order, on `shared`."""

    def __init__(
        self, shared: SharedWork, run: Callable[[Any], object], *, capacity: int, name: str
    ) -> None:
        self.name = name
        self._shared = shared
        self._run = run
        self._capacity = capacity
        self._items: deque[Any] = deque()
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._scheduled = False
        """A drain is queued or running: at most one per lane, which keeps the order."""
        self._closed = False

    def submit(self, item: Any) -> bool:
        """Queue `item`; False when `capacity` items wait already or the lane is stopped."""
        with self._lock:
            if self._closed or len(self._items) >= self._capacity:
                return False
            self._items.append(item)
            if self._scheduled:
                return True
            self._scheduled = True
        self._shared.submit(self._drain)
        return True

    def stop(self, timeout: float, *, finish: bool = True) -> bool:
        """Take no more items; run the queued ones (`finish`) or drop them; wait up to
        `timeout` for the lane to be idle (False if it is not)."""
        with self._lock:
            self._closed = True
            if not finish:
                self._items.clear()
            return self._idle.wait_for(lambda: not self._scheduled, timeout)

    def _drain(self) -> None:
        for _ in range(BATCH):
            with self._lock:
                if not self._items:
                    self._scheduled = False
                    self._idle.notify_all()
                    return
                item = self._items.popleft()
            try:
                self._run(item)
            except Exception:  # one bad item must not stop the lane
                log.exception("%s: work item failed", self.name)
        self._shared.submit(self._drain)  # still scheduled: back of the queue, order kept


class LaneWake(threading.Event):
    """An Event that, once `lane` is set, also queues one item on it when set: a sync thread's
    wake-up (PUBACKs, durable messages, its tick) becomes a turn on the shared threads. A lane
    of capacity 1 coalesces wake-ups as an Event does."""

    def __init__(self) -> None:
        super().__init__()
        self.lane: Lane | None = None

    def set(self) -> None:
        """Set the flag and queue a turn."""
        super().set()
        lane = self.lane
        if lane is not None:
            lane.submit(None)


def run_task(
    shared: SharedWork | None, fn: Callable[..., Any], /, *args: Any, name: str
) -> Callable[[float], object]:
    """Run `fn(*args)` on a daemon thread of its own named `name` (no `shared`) or on `shared`;
    returns what waits up to a timeout for it to end."""
    if shared is not None:
        run = shared.submit(fn, *args)
        return lambda timeout: wait([run], timeout)
    thread = threading.Thread(target=fn, args=args, name=name, daemon=True)
    thread.start()
    return thread.join
