"""`isolate = true`: a plugin's loop in a child process, supervised like any other plugin.

`IsolatedRunner` is a `PluginRunner` whose loop is a `ChildLoop`: the host's handle on a child
process (agent/engine/isolate_child.py) that runs the plain in-process loop. A native crash (a
segfault in a runtime or a delegate) kills only the child; the handle reports it as the loop's
error, with the signal's name, and the runner's usual path takes over: `plugin_failed` event,
restart with back-off, counters and `last_error` in status. The host's other loops never wait on
the child: nothing crosses between the processes inside a tick.

What crosses, and how (docs/realtime.md, "A process per plugin"):
- sensor readings and actuator commands: a shared-memory block per plugin, pumped by one host
  thread per isolated plugin at the plugin's rate (agent/engine/isolate_shm.py);
- control (go, apply params or rate, stop): a pipe; `apply` waits for the child's answer;
- outputs, counters and histograms: the same pipe, back; the host thread re-emits the outputs on
  the plugin's own output channel (it is that channel's one producer while the child runs) and
  keeps the histograms as "everything before this child + this child's".
The model slot lives in the child (loaded there, so a model that crashes on load costs only the
child); a live model swap is not offered for an isolated plugin yet: restart it instead.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection, wait
from typing import Any

import numpy as np

from agent.engine.histogram import Histogram
from agent.engine.isolate_child import ChildSpec, ModelSource, child_main
from agent.engine.isolate_shm import Bridge, DeviceBlock, Layout
from agent.engine.runner import PluginRunner
from agent.errors import PluginError
from agent.plugin.base import PluginParams
from agent.runtime.base import Model

log = logging.getLogger(__name__)

SETUP_TIMEOUT_S = 30.0
"""A child that has not finished its plugin's setup by then is killed: the setup failed."""
REPLY_TIMEOUT_S = 2.0
"""How long `apply` waits for the child's answer."""
IDLE_POLL_S = 0.05
"""How often the host thread of a plugin without devices looks at the pipe when it is quiet."""


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
        emit: Callable[[tuple[Any, ...]], None],
    ) -> None:
        self.name = spec.name
        self.rate_hz = spec.rate_hz
        self._spec = spec
        self._bridge = bridge
        self._emit = emit
        self._hists = [(h, _state_of(h)) for h in (tick_hist, late_hist)]
        self.ticks = 0
        self.overruns = 0
        self.skipped = 0
        self.error: BaseException | None = None
        self.model_version: str | None = None
        self._replies: queue.Queue[str | None] = queue.Queue()
        self._stopping = False
        self._reaping = threading.Lock()
        self._thread: threading.Thread | None = None
        parent, child = mp.Pipe()
        self._conn: Connection = parent
        self.process = _context().Process(
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

    # --- the host thread ---------------------------------------------------------------------

    def _serve(self) -> None:
        conn, bridge = self._conn, self._bridge
        error: str | None = None
        try:
            while True:
                if bridge.idle:
                    timeout = IDLE_POLL_S
                else:
                    bridge.pump()
                    timeout = 1.0 / self.rate_hz
                while conn.poll(timeout):
                    timeout = 0.0
                    msg = conn.recv()
                    if msg[0] == "error":
                        error = msg[1]
                    else:
                        self._handle(msg)
        except (EOFError, OSError):
            pass  # the child is gone
        code = self.reap(1.0)
        if error is not None:
            self.error = ChildCrashed(error)
        elif not self._stopping:
            self.error = ChildCrashed(_death(self.pid, code))

    def _handle(self, msg: tuple[Any, ...]) -> None:
        kind = msg[0]
        if kind == "out":
            self._emit(msg)
        elif kind == "stats":
            (self.ticks, self.overruns, self.skipped), *states = msg[1:]
            for (hist, base), state in zip(self._hists, states, strict=True):
                _set_sum(hist, base, state)
        elif kind == "applied":
            self._replies.put(msg[1])

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


class IsolatedRunner(PluginRunner):
    """A `PluginRunner` whose loop runs in a child process (`isolate = true`)."""

    def __init__(
        self,
        *args: Any,
        plugin_ref: str,
        models: ModelSource | None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.plugin_ref = plugin_ref
        """`module:QualName` of the registered class, imported by the child."""
        self._models = models
        self._block: DeviceBlock | None = None
        self._pending: ChildLoop | None = None
        self._child: ChildLoop | None = None

    def setup(self) -> None:
        """Start a child that imports the plugin, loads its model and runs its setup."""
        with self._lock:
            self._end_pending()
            res = self.res
            if self._block is None:
                sensors = {n: s.spec for n, s in res.sensors.items()}
                actuators = {n: a.spec for n, a in res.actuators.items()}
                self._block = DeviceBlock.create(Layout.of(sensors, actuators))
            child = ChildLoop(
                self._spec(self._block.name),
                bridge=Bridge(self._block, res.sensors, res.actuators),
                tick_hist=self.tick_hist,
                late_hist=self.late_hist,
                emit=self._emit,
            )
            try:
                child.wait_ready()
            except PluginError as exc:
                raise PluginError(f"plugin {self.name!r}: setup failed: {exc}") from exc
            self._pending = child

    def _spec(self, shm_name: str) -> ChildSpec:
        res, options = self.res, self.options
        return ChildSpec(
            name=self.name,
            plugin_ref=self.plugin_ref,
            params=self._params.model_dump(mode="json"),
            rate_hz=self._rate_hz,
            engine=self.engine,
            model_name=res.model_name,
            models=self._models,
            shm_name=shm_name,
            sensors={n: s.spec for n, s in res.sensors.items()},
            actuators={n: a.spec for n, a in res.actuators.items()},
            cpu_affinity=options.cpu_affinity,
            realtime_priority=options.realtime_priority,
            wait=options.wait,
            log_level=logging.getLogger().getEffectiveLevel(),
        )

    def launch(self) -> None:
        """Let the set-up child tick."""
        with self._lock:
            child = self._pending
            if child is None:
                raise PluginError(f"plugin {self.name!r}: launch before setup")
            self._pending = None
            self._child = child
            child.go()
            self._loop = child  # type: ignore[assignment]  # the runner reads a Loop's surface
            self.state = "running"
            self._started_at = time.monotonic()
            self._watch.restart()

    def post(self, fn: Callable[[], Any], timeout: float = 2.0) -> Any:
        """Run `fn` here when nothing runs; PluginError while a child does."""
        with self._lock:
            if self._child is not None and self._child.alive:
                return self._child.post(fn, timeout)
            return fn()

    def apply(
        self,
        *,
        params: PluginParams | None = None,
        rate_hz: float | None = None,
        timeout: float = 2.0,
    ) -> None:
        """Make `params` and/or `rate_hz` the ones in force; a child gets them between ticks."""
        with self._lock:
            child = self._child if self._child is not None else self._pending
            if child is not None and child.reap(0.0) is None:
                data = params.model_dump(mode="json") if params is not None else None
                child.apply(data, rate_hz, timeout)
            if params is not None:
                self._params = params
            if rate_hz is not None:
                self._rate_hz = rate_hz
                self._watch.restart()

    def swap_model(self, model: Model, timeout: float = 2.0, *, name: str | None = None) -> Model:
        """Not offered yet for an isolated plugin: its model lives in the child."""
        raise PluginError(
            f"plugin {self.name!r} is isolated: its model is loaded in its own process; "
            "restart the plugin to load the active version"
        )

    def _end_loop(self, timeout: float) -> bool:
        ended = super()._end_loop(timeout)
        self._child = None
        self._end_pending()
        return ended

    def _end_pending(self) -> None:
        child, self._pending = self._pending, None
        if child is not None:
            child.stop()
            child.join(1.0)

    def close(self) -> None:
        """Remove the shared-memory block (after the last stop)."""
        with self._lock:
            if self._block is not None:
                self._block.close()
                self._block = None

    def info(self) -> dict[str, Any]:
        """As in process, with the model version the child loaded and the child's pid."""
        child = self._child
        out = super().info()
        out["model_version"] = child.model_version if child is not None else None
        out["pid"] = child.pid if child is not None else None
        return out

    def stats(self) -> dict[str, Any]:
        """As in process, marked isolated."""
        return {**super().stats(), "isolated": True}

    def _emit(self, msg: tuple[Any, ...]) -> None:
        # The host thread of the running child is this channel's only producer.
        _, ts, rows, events = msg
        channel = self.res.channel
        if ts is not None:
            for i in range(len(ts)):
                channel.telemetry(int(ts[i]), rows[i])
        for kind, ts_ns, score, data in events:
            channel.event(ts_ns, kind, score, **data)


def _context() -> Any:
    """forkserver where there is one (a child forks from a small, clean server process in
    milliseconds); spawn elsewhere. Never plain fork: the host has threads."""
    if sys.platform.startswith("linux"):
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(["agent.engine.isolate_child"])
        return ctx
    return mp.get_context("spawn")


def _death(pid: int | None, code: int | None) -> str:
    if code is not None and code < 0:
        try:
            sig = signal.Signals(-code).name
        except ValueError:
            sig = f"signal {-code}"
        return f"child process {pid} killed by {sig}"
    return f"child process {pid} exited with code {code}"


def _state_of(hist: Histogram) -> tuple[Any, int, int]:
    return (hist.counts.copy(), hist.max_ns, hist.total_ns)


def _set_sum(hist: Histogram, base: tuple[Any, int, int], child: tuple[Any, int, int]) -> None:
    """hist := what it held before this child + what this child has recorded so far."""
    np.add(base[0], child[0], out=hist.counts)
    hist.max_ns = max(base[1], child[1])
    hist.total_ns = base[2] + child[2]
    hist.count = int(hist.counts.sum())
