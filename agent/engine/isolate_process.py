"""The host's handle on one isolated plugin's child process: start it, wait for its setup,
let it tick, serve its pipe and its devices from one host thread, stop or kill it.

`ChildLoop` offers the surface a `PluginRunner` reads of a `Loop` (ticks, overruns, skipped,
error, alive, stop, join), so the runner's supervision (crash, back-off, restart, overrun
watch, watchdog) works on a child process unchanged. See agent/engine/isolate.py.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import queue
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection, wait
from typing import Any

import numpy as np

from agent.children import child_context, describe_exit
from agent.engine.histogram import Histogram
from agent.engine.isolate_bridge import Bridge
from agent.engine.isolate_child import ChildSpec, child_main
from agent.errors import PluginError

log = logging.getLogger("agent.engine.isolate")

SETUP_TIMEOUT_S = 30.0
"""A child that has not finished its plugin's setup by then is killed: the setup failed."""
REPLY_TIMEOUT_S = 2.0
"""How long `apply` waits for the child's answer."""
SWAP_TIMEOUT_S = 30.0
"""How long `swap` waits for the child to load, check and activate a model."""
IDLE_POLL_S = 0.05
"""How often the host thread of a plugin without devices looks at the pipe when it is quiet."""
PUMP_LEAD_NS = 200_000
"""Sensors are copied in this long before the child's deadline, commands out this long after
(at most a quarter period each)."""
POLL_SLACK_NS = 2_000_000
"""Waits longer than this poll the pipe (millisecond steps), shorter ones sleep."""
FINISH_GRACE_S = 2.0
"""After its tick raised, the child has this long to tear down and report before it is killed."""


class ChildCrashed(PluginError):
    """The child process of an isolated plugin died, or its tick raised."""


class ChildLoop:
    """One child process running one plugin's loop, seen through the surface a runner uses."""

    def __init__(
        self,
        spec: ChildSpec,
        *,
        bridge: Bridge,
        tick_hist: Histogram,
        late_hist: Histogram,
        emit_events: Callable[[list[tuple[str, int, float, dict[str, Any]]]], None],
    ) -> None:
        self.name = spec.name
        self.rate_hz = spec.rate_hz
        self._spec = spec
        self._bridge = bridge
        self._emit_events = emit_events
        self._hists = [(h, _state_of(h)) for h in (tick_hist, late_hist)]
        self.ticks = 0
        self.overruns = 0
        self.skipped = 0
        self.error: BaseException | None = None
        self.model_version: str | None = None
        self._replies: queue.Queue[str | None] = queue.Queue()
        self._swaps: queue.Queue[tuple[str | None, str | None]] = queue.Queue()
        self._stopping = False
        self._killed_for: str | None = None
        """Why the host killed the child (stuck in a tick, or in a model swap), once it did."""
        self._error: str | None = None
        """The child's report of its tick's exception, once it sent one."""
        self._give_up = float("inf")
        """After a tick error: until when the child may take to finish (time.monotonic)."""
        self._reaping = threading.Lock()
        self._thread: threading.Thread | None = None
        parent, child = mp.Pipe()
        self._conn: Connection = parent
        self.process = child_context().Process(
            target=child_main, args=(spec, child), name=f"plugin-{spec.name}", daemon=True
        )
        self.process.start()
        child.close()  # our copy: the child's end must close with the child, so we see EOF

    @property
    def pid(self) -> int | None:
        """The child's process id."""
        pid: int | None = self.process.pid
        return pid

    # --- set-up, then go ---------------------------------------------------------------------

    def wait_ready(self, timeout: float = SETUP_TIMEOUT_S) -> None:
        """Wait for the child's plugin setup; PluginError (child ended) if it failed or died."""
        ready = wait([self._conn, self.process.sentinel], timeout)
        try:
            msg = self._conn.recv() if self._conn in ready else None
        except (EOFError, OSError):
            msg = None
        if msg is not None and msg[0] == "ready":
            self.model_version = msg[1]
            return
        if msg is not None and msg[0] == "failed":
            reason = msg[1]
        elif not ready:
            reason = f"child process {self.pid} did not finish setup within {timeout:g} s"
        else:
            reason = _death(self.pid, self.reap(1.0))
        self._end_process(1.0)
        raise ChildCrashed(reason)

    def go(self) -> None:
        """Start ticking, and the host thread that serves the child."""
        self._thread = threading.Thread(
            target=self._serve, name=f"isolate-{self.name}", daemon=True
        )
        self._bridge.pump()  # the first tick reads real values, not an empty block
        self._thread.start()
        self._send(("go",))

    # --- the surface of a Loop ---------------------------------------------------------------

    @property
    def alive(self) -> bool:
        """True while the child runs (the host thread ends when the child's pipe closes)."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    def stop(self) -> None:
        """Ask the child to end after its current tick."""
        self._stopping = True
        self._send(("stop",))

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the child to end; past `timeout` it is killed (a process, unlike a thread,
        can be), so this returns True unless even SIGKILL did not end it within a second."""
        end = time.monotonic() + (timeout or 0.0)
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        self._end_process(max(0.0, end - time.monotonic()))
        if thread is not None:
            thread.join(1.0)
            if not thread.is_alive():
                self._conn.close()
        return self.reap(0.0) is not None

    def kill_stuck(self, seconds: float) -> None:
        """End a child whose ticks stopped `seconds` ago: reported as a crash saying so."""
        log.error("plugin %s: no tick for %.1f s; killing child %s", self.name, seconds, self.pid)
        self._kill(f"child process {self.pid} stuck in a tick for {seconds:.1f} s; killed")

    def _kill(self, reason: str) -> None:
        self._killed_for = reason
        with contextlib.suppress(ValueError, OSError):
            self.process.kill()

    def post(self, fn: Callable[[], Any], timeout: float = 2.0) -> Any:
        """Code cannot run between the ticks of another process."""
        raise PluginError(f"plugin {self.name!r} is isolated: no code runs between its ticks")

    def set_rate(self, rate_hz: float, timeout: float = REPLY_TIMEOUT_S) -> None:
        """Change the child's rate from its next deadline on."""
        self.apply(None, rate_hz, timeout)

    def apply(self, params: dict[str, Any] | None, rate_hz: float | None, timeout: float) -> None:
        """Hand params (as data) and/or a rate to the child; PluginError if it refuses."""
        while not self._replies.empty():  # a late answer to an earlier, timed-out request
            self._replies.get_nowait()
        self._send(("apply", params, rate_hz))
        if self._thread is None:  # set up, not ticking: no host thread yet, read it here
            reply = self._conn.recv()[1] if self._conn.poll(timeout) else "no answer"
        else:
            try:
                reply = self._replies.get(timeout=timeout)
            except queue.Empty:
                reply = "no answer"
        if reply is not None:
            raise PluginError(f"plugin {self.name!r}: child refused the change: {reply}")
        if rate_hz is not None:
            self.rate_hz = rate_hz

    def swap(self, folder: str | None, timeout: float = SWAP_TIMEOUT_S) -> str:
        """Have the child load the model in `folder` (None: the active version of its model)
        and run it from its next tick on; the version it now runs. PluginError naming the
        reason if the child refused it, or died while loading it, or took longer than `timeout`
        (then it is killed: either way the crash is reported and restarted like any other, and
        the restart loads the active version)."""
        while not self._swaps.empty():  # a late answer to an earlier, timed-out request
            self._swaps.get_nowait()
        self._send(("swap", folder))
        if self._thread is None:  # set up, not ticking: no host thread yet, read it here
            msg = self._conn.recv() if self._conn.poll(timeout) else None
            reply: tuple[str | None, str | None] = (
                (msg[1], msg[2]) if msg is not None else ("no answer", None)
            )
        else:
            reply = self._await_swap(timeout)
        error, version = reply
        if error is not None or version is None:
            raise PluginError(f"plugin {self.name!r}: child refused the model: {error}")
        self.model_version = version
        return version

    def _await_swap(self, timeout: float) -> tuple[str | None, str | None]:
        """The child's (error, version) answer, read by the host thread; an error when the
        child ends first or takes longer than `timeout`."""
        end = time.monotonic() + timeout
        while True:
            try:
                return self._swaps.get(timeout=0.05)
            except queue.Empty:
                if not self.alive:
                    return "the child process ended while loading the model", None
                if time.monotonic() > end:
                    # It may still finish and swap in a model the caller gave up on: end the
                    # child instead; its restart loads the active version.
                    self._kill(f"child process {self.pid} loaded a model for over {timeout:g} s")
                    return f"no answer within {timeout:g} s; child process killed", None

    # --- the host thread ---------------------------------------------------------------------

    def _serve(self) -> None:
        try:
            while time.monotonic() < self._give_up:
                if self._bridge.idle:
                    self._drain(IDLE_POLL_S)
                else:
                    self._pump_period()
        except (EOFError, OSError):
            pass  # the child is gone
        code = self.reap(1.0)
        if code is None:  # a teardown that hangs must not hold the restart back
            self.process.kill()
            code = self.reap(1.0)
        if self._error is not None:
            self.error = ChildCrashed(self._error)
        elif self._killed_for is not None:
            self.error = ChildCrashed(self._killed_for)
        elif not self._stopping:
            self.error = ChildCrashed(_death(self.pid, code))

    def _pump_period(self) -> None:
        """One period of the device bridge, locked to the child's ticks: sensors copied in just
        before its next deadline, new commands copied out just after it (a tick that runs
        longer has its command picked up a period later)."""
        bridge = self._bridge
        period = round(1e9 / self.rate_hz)
        lead = min(PUMP_LEAD_NS, period // 4)
        now = time.perf_counter_ns()
        last = bridge.last_tick_ns()
        due = last + ((now - last + lead) // period + 1) * period - lead if last else now
        self._wait_until(due)
        bridge.pump()
        self._wait_until(due + 2 * lead)
        bridge.pump_actuators()

    def _wait_until(self, target_ns: int) -> None:
        """Serve the pipe until `target_ns` (perf_counter_ns); the last stretch is slept, as a
        pipe poll counts in whole milliseconds."""
        while self._error is None:
            remaining = target_ns - time.perf_counter_ns()
            if remaining <= 0:
                break
            if remaining > POLL_SLACK_NS:
                self._drain((remaining - POLL_SLACK_NS) / 1e9)
            else:
                time.sleep(remaining / 1e9)
        self._drain(0.0)

    def _drain(self, timeout: float) -> None:
        """Handle what the child sent, waiting up to `timeout` for the first message."""
        conn = self._conn
        while conn.poll(timeout):
            timeout = 0.0
            msg = conn.recv()
            if msg[0] == "error":
                self._error = msg[1]
                self._give_up = time.monotonic() + FINISH_GRACE_S
            else:
                self._handle(msg)

    def _handle(self, msg: tuple[Any, ...]) -> None:
        kind = msg[0]
        if kind == "events":
            self._emit_events(msg[1])
        elif kind == "stats":
            (self.ticks, self.overruns, self.skipped), *states = msg[1:]
            for (hist, base), state in zip(self._hists, states, strict=True):
                _set_sum(hist, base, state)
        elif kind == "applied":
            self._replies.put(msg[1])
        elif kind == "swapped":
            self._swaps.put((msg[1], msg[2]))

    def reap(self, timeout: float) -> int | None:
        """Wait up to `timeout` for the child to end; its exit code (-N: signal N), or None.

        One thread at a time: a forkserver child's exit code is read once from a pipe, and a
        second reader racing the first would get 255 instead of the signal.
        """
        with self._reaping:
            self.process.join(timeout)
            code: int | None = self.process.exitcode
            return code

    def _send(self, msg: tuple[Any, ...]) -> None:
        # The child may be gone: the host thread sees its pipe close and reports it.
        with contextlib.suppress(OSError, ValueError):
            self._conn.send(msg)

    def _end_process(self, grace: float) -> None:
        if self.reap(grace) is None:
            log.error("plugin %s: child %s did not stop in time; killing it", self.name, self.pid)
            self.process.kill()
            self.reap(1.0)
        if self._thread is None:  # never went: nobody else reads the pipe
            self._conn.close()


def _death(pid: int | None, code: int | None) -> str:
    return f"child process {pid} {describe_exit(code)}"


def _state_of(hist: Histogram) -> tuple[Any, int, int]:
    return (hist.counts.copy(), hist.max_ns, hist.total_ns)


def _set_sum(hist: Histogram, base: tuple[Any, int, int], child: tuple[Any, int, int]) -> None:
    """hist := what it held before this child + what this child has recorded so far."""
    np.add(base[0], child[0], out=hist.counts)
    hist.max_ns = max(base[1], child[1])
    hist.total_ns = base[2] + child[2]
    hist.count = int(hist.counts.sum())
