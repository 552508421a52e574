"""A fixed-rate loop: one plugin's tick on its own thread, on absolute perf_counter_ns deadlines.

Waiting: sleep until `spin_us` before the deadline (in slices of at most 50 ms, so a stop request
is seen quickly even at low rates), then spin on perf_counter_ns to the deadline. The thread's
timer slack is set to 1 ns (Linux) so the sleep itself lands closer to where the spin starts.
The spin keeps the GIL: the switch interval (engine.switch_interval_us, 100 us) bounds how long
a waking loop waits for it, and the spin window absorbs that wait, so the tick starts on time.
(`spin_yield=True` calls sched_yield() in every spin step, releasing the GIL; measured worse:
with a CPU-bound Python thread around, every release costs up to a switch interval to get the
GIL back, and lateness p50 rose from under 1 us to 25-30 us.)

`wait="spin"` (a plugin that owns a core: `cpu_affinity = [N]`) never sleeps: the loop spins on
perf_counter_ns for the whole period, so the core never idles and the tick runs on warm caches
and branch predictors at full clock. On the dev VM a call made right after a ~ms sleep ran 5-30x
slower than in a tight loop (shared/MEASURED.md); spinning is what the tight loop does. It costs
one core at 100 % and holds the GIL between switch intervals, so it belongs on an isolated core
(isolcpus/nohz_full) and best in its own process (`isolate = true`). docs/realtime.md has figures.

Ticks happen only on the deadline grid (start + k * period). A deadline that has already passed
when the previous tick ends is skipped and counted (`skipped`; the tick that caused it counts as
one `overrun`): ticks are never bunched to catch up. Lateness is wake-up time minus deadline.

Changes from other threads arrive through a single-slot `Mailbox`, applied right after a tick,
before waiting for the next deadline, so they use the slack and never delay a deadline.

GC policy: with a `SlackCollector` (engine.gc_mode "freeze", see agent/engine/gc_slack.py and
agent/engine/process.py), automatic collection is off and the loop runs the due young-generation
collection after a tick, only when it fits in the time left before the next deadline. A gen-0
collection costs a few to tens of microseconds after `gc.freeze()`, against about 10 ms for a
full collection of the agent's libraries without it (shared/MEASURED.md).

The loop reaches the plugin only through the `tick` callable and the mailbox, and reports only
through plain counters and histograms: a loop running a plugin in a child process can replace it
without touching plugins.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from agent.engine.gc_slack import SlackCollector
from agent.engine.histogram import Histogram
from agent.engine.mailbox import Mailbox

log = logging.getLogger(__name__)

MAX_SLEEP_NS = 50_000_000
FULL_SPIN_NS = 1 << 62
WAIT_MODES = ("sleep", "spin")
_PR_SET_TIMERSLACK = 29

Tick = Callable[[int], None]
_WARNED: set[tuple[str, str]] = set()


class Loop:
    """Calls `tick(now_ns)` at `rate_hz` on a dedicated thread until stopped or the tick raises."""

    def __init__(
        self,
        name: str,
        tick: Tick,
        *,
        rate_hz: float,
        spin_us: int = 100,
        collector: SlackCollector | None = None,
        spin_yield: bool = False,
        wait: str = "sleep",
        cpu_affinity: list[int] | None = None,
        realtime_priority: int | None = None,
        tick_hist: Histogram | None = None,
        late_hist: Histogram | None = None,
    ) -> None:
        self.name = name
        self._tick = tick
        self._period_ns = period_ns(rate_hz)
        self.rate_hz = rate_hz
        self.wait = wait
        # A spin window longer than any period: the wait below never sleeps.
        self._spin_ns = FULL_SPIN_NS if wait == "spin" else spin_us * 1000
        self._collector = collector
        self._spin_yield = spin_yield
        self._affinity = cpu_affinity
        self._priority = realtime_priority
        self.tick_hist = tick_hist if tick_hist is not None else Histogram()
        self.late_hist = late_hist if late_hist is not None else Histogram()
        self.mailbox = Mailbox()
        self.ticks = 0
        self.overruns = 0
        self.skipped = 0
        self.gc_collections = 0
        self.error: BaseException | None = None
        self.warnings: list[str] = []
        self._stop_requested = False
        self._thread: threading.Thread | None = None
        self.started = threading.Event()

    # --- control, from any thread -------------------------------------------------------------

    def start(self) -> None:
        """Start the loop thread; the first tick runs immediately."""
        self._thread = threading.Thread(target=self._main, name=f"loop-{self.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Ask the loop to end after the current tick (seen within 50 ms while waiting)."""
        self._stop_requested = True

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the thread to end; True if it has."""
        if self._thread is not None:
            self._thread.join(timeout)
        return not self.alive

    @property
    def alive(self) -> bool:
        """True while the loop thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def post(self, fn: Callable[[], Any], timeout: float = 2.0) -> Any:
        """Run `fn` on the loop thread between two ticks (or here, if the loop is not running)."""
        thread = self._thread
        if thread is not None and thread.ident == threading.get_ident():
            return fn()  # posted from inside a tick or a mail: waiting for ourselves would hang
        return self.mailbox.send(fn, alive=lambda: self.alive, timeout=timeout)

    def set_rate(
        self, rate_hz: float, timeout: float = 2.0, *, also: Callable[[], None] | None = None
    ) -> None:
        """Change the rate from the next deadline on (and run `also` in the same mail)."""

        def apply() -> None:
            self._period_ns = period_ns(rate_hz)
            self.rate_hz = rate_hz
            if also is not None:
                also()

        self.post(apply, timeout)

    # --- the loop thread ----------------------------------------------------------------------

    def _main(self) -> None:
        self._prepare_thread()
        try:
            self._run()
        except Exception as exc:  # the supervisor reports and restarts; never kill the process
            self.error = exc
        finally:
            self.mailbox.take()

    def _prepare_thread(self) -> None:
        tid = threading.get_native_id()
        _set_timer_slack(1)
        if self._affinity:
            try:
                os.sched_setaffinity(tid, self._affinity)
            except (OSError, ValueError) as exc:
                self._warn(f"cpu_affinity {self._affinity} not applied: {exc}")
        if self._priority is not None:
            try:
                os.sched_setscheduler(tid, os.SCHED_FIFO, os.sched_param(self._priority))
            except (OSError, AttributeError) as exc:
                self._warn(
                    f"realtime_priority {self._priority} (SCHED_FIFO) not permitted: {exc}; "
                    "running at normal priority (grant CAP_SYS_NICE to allow it)"
                )

    def _warn(self, message: str) -> None:
        self.warnings.append(message)
        # Once per plugin and kind per process: a restarted loop would only repeat it.
        key = (self.name, message.partition(" ")[0])
        if key not in _WARNED:
            _WARNED.add(key)
            log.warning("plugin %s: %s", self.name, message)

    def _run(self) -> None:
        # Everything the hot path touches is a local: attribute lookups cost more than the work.
        perf = time.perf_counter_ns
        sleep = time.sleep
        spin_yield = self._spin_yield
        sched_yield = os.sched_yield
        tick = self._tick
        tick_record = self.tick_hist.record
        late_record = self.late_hist.record
        mailbox = self.mailbox
        period = self._period_ns
        spin = self._spin_ns
        full_spin = self.wait == "spin"
        collector = self._collector
        gc_count = gc.get_count
        gc_threshold = collector.threshold0 if collector is not None else 0
        deadline = perf()
        self.started.set()
        while not self._stop_requested:
            # Wait: sleep in slices up to `spin` before the deadline, then spin.
            wait = deadline - spin - perf()
            while wait > 0:
                sleep(wait * 1e-9 if wait < MAX_SLEEP_NS else MAX_SLEEP_NS * 1e-9)
                if self._stop_requested:
                    return
                wait = deadline - spin - perf()
            if full_spin:  # spin in slices, so a stop request is seen at low rates too
                while deadline - perf() > MAX_SLEEP_NS:
                    if self._stop_requested:
                        return
            now = perf()
            if spin_yield:
                while now < deadline:
                    sched_yield()
                    now = perf()
            while now < deadline:
                now = perf()
            late_record(now - deadline)
            tick(now)
            end = perf()
            tick_record(end - now)
            self.ticks += 1
            deadline += period
            if end > deadline:
                missed = (end - deadline) // period + 1
                deadline += missed * period
                self.skipped += missed
                self.overruns += 1
            if mailbox.pending is not None:
                mailbox.take()
                period = self._period_ns
            if collector is not None and gc_count()[0] >= gc_threshold:
                self.gc_collections += collector.collect_if_slack(deadline)


def period_ns(rate_hz: float) -> int:
    """The tick period in integer nanoseconds."""
    return max(1, round(1e9 / rate_hz))


def _set_timer_slack(ns: int) -> None:
    """Shrink this thread's timer slack so sleeps end closer to their target (Linux only)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_TIMERSLACK, ctypes.c_ulong(ns), 0, 0, 0)
    except (OSError, AttributeError):
        pass
