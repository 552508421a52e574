"""Garbage collection moved into the loops' idle slack (engine.gc_mode = "freeze").

With automatic collection off, whichever loop finishes a tick while the young generation is over
its threshold runs the collection CPython would have run (generation 1 or 2 when their counters
are due, as CPython itself decides), provided the time left before its next deadline is at least
twice the last measured cost of that generation (and at least 200 us). One collector is shared by
all loops of a host, so costs learnt by one loop inform the others, and the loop with the most
slack naturally picks up the expensive collections. An estimate inflated by one preempted
collection fades by 1/16 at every declined chance, so no generation is starved for good.
"""

from __future__ import annotations

import gc
import time

MIN_SLACK_NS = 200_000


class SlackCollector:
    """Decides, after a tick, whether a collection fits before the next deadline."""

    def __init__(self) -> None:
        self.threshold0, self.threshold1, self.threshold2 = (max(t, 1) for t in gc.get_threshold())
        self.cost_ns = [20_000, 100_000, 500_000]
        self.collections = [0, 0, 0]
        self.declined = 0

    def due(self) -> bool:
        """True when the young generation is over its threshold (cheap: one C call)."""
        return gc.get_count()[0] >= self.threshold0

    def collect_if_slack(self, deadline_ns: int) -> bool:
        """Run the due collection if it fits before `deadline_ns`; True if it ran."""
        counts = gc.get_count()
        generation = 0
        if counts[1] >= self.threshold1:
            generation = 2 if counts[2] >= self.threshold2 else 1
        cost = self.cost_ns[generation]
        start = time.perf_counter_ns()
        if deadline_ns - start < max(MIN_SLACK_NS, 2 * cost):
            self.cost_ns[generation] = cost - (cost >> 4)
            self.declined += 1
            return False
        gc.collect(generation)
        self.cost_ns[generation] = time.perf_counter_ns() - start
        self.collections[generation] += 1
        return True
