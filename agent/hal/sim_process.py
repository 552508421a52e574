"""The `sim` HAL backend with its simulators in a process of their own (`hal.sim_process`).

The agent's side of agent/hal/sim_child.py: one shared-memory `DeviceBlock` per plugin, owned
here, whose sensors the plugin reads and whose actuators it writes with the same seqlocked
copies an isolated plugin uses; no simulator code runs in the agent. A thread watches the
process: if it dies (a bug, a native crash, the OOM killer), every sensor reports a dropout at
once, the death is logged with its cause, and a new process starts after a back-off with every
simulator bound again from its seed (a new episode): the plugins see a sensor outage, as they
would a device that reboots, and never a reading frozen in place.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

from agent.backoff import Backoff
from agent.children import child_context, describe_exit
from agent.errors import HalError
from agent.hal.base import Actuator, ActuatorSpec, Sensor, SensorSpec
from agent.hal.shm import DeviceBlock, Layout, ShmActuator, ShmSensor
from agent.hal.sim_child import sim_main
from agent.hal.simulator import SimBackend, Simulator, check_device, simulator_class

log = logging.getLogger("agent.hal.sim")

BIND_TIMEOUT_S = 30.0
"""A simulator that has not been built by then (a hung import) fails its plugin's start."""
STOP_TIMEOUT_S = 2.0
"""How long `stop` waits for the process to end before it kills it."""
STABLE_S = 60.0
"""A process that ran this long before it died is restarted after the shortest back-off again."""


@dataclass
class _Binding:
    ref: str
    seed: int
    cls: type[Simulator]
    block: DeviceBlock


class SimProcessHal(SimBackend):
    """Simulators stepped in real time (times `speed`) by a child process, devices in shared
    memory."""

    def __init__(self, *, speed: float = 1.0, batch_s: float = 0.005) -> None:
        self._speed = speed
        self._batch_s = batch_s
        self._bound: dict[str, _Binding] = {}
        self._lock = threading.Lock()  # one conversation on the pipe at a time
        self._process: Any = None
        self._launched_at = 0.0
        self._conn: Connection | None = None
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None
        self.restarts = 0
        """Processes started again after one died."""

    # --- binding ----------------------------------------------------------------------------

    def bind_ref(self, plugin: str, ref: str, seed: int) -> None:
        """Give `plugin` a simulator of class `ref`; HalError naming why it cannot be built."""
        cls = simulator_class(ref)
        block = DeviceBlock.create(Layout.of(cls.sensors, cls.actuators))
        with self._lock:
            self._bound[plugin] = _Binding(ref, seed, cls, block)
            if self._conn is None:
                return
            try:
                self._bind_in_child(plugin, self._bound[plugin])
            except HalError:
                self._bound.pop(plugin)
                block.close()
                raise

    def is_bound(self, plugin: str) -> bool:
        """True when `plugin` has a simulator."""
        return plugin in self._bound

    def unbind(self, plugin: str) -> None:
        """Stop stepping the simulator of `plugin` and free its block."""
        with self._lock:
            binding = self._bound.pop(plugin, None)
            if binding is None:
                return
            self._send(("unbind", plugin))
        binding.block.close()

    def sim_time(self, plugin: str) -> float:
        """Simulated seconds of the plugin's simulator, as the process last published them."""
        ns: int = self._binding(plugin).block.clock[0]
        return ns / 1e9

    @property
    def pid(self) -> int | None:
        """The simulator process's id while it runs."""
        process = self._process
        return None if process is None else int(process.pid)

    # --- devices ----------------------------------------------------------------------------

    def sensor(self, plugin: str, name: str, spec: SensorSpec) -> Sensor:
        """A sensor read from the plugin's block."""
        binding = self._binding(plugin)
        check_device(binding.cls, name, spec.shape, "sensor")
        return ShmSensor(binding.block.sensors[name], spec)

    def actuator(self, plugin: str, name: str, spec: ActuatorSpec) -> Actuator:
        """An actuator written to the plugin's block."""
        binding = self._binding(plugin)
        check_device(binding.cls, name, spec.shape, "actuator")
        return ShmActuator(binding.block.actuators[name], spec)

    # --- the process ------------------------------------------------------------------------

    def start(self) -> None:
        """Start the simulator process with every simulator bound so far."""
        if self._watcher is not None:
            return
        self._stopping.clear()
        with self._lock:
            self._launch()
        self._watcher = threading.Thread(target=self._watch, name="sim-process", daemon=True)
        self._watcher.start()

    def stop(self) -> None:
        """Stop the process and free every block."""
        self._stopping.set()
        if self._watcher is not None:
            self._watcher.join(timeout=STOP_TIMEOUT_S + 2.0)
            self._watcher = None
        with self._lock:
            self._end_process()
            for binding in self._bound.values():
                binding.block.close()
            self._bound.clear()

    def _launch(self) -> None:
        parent, child = child_context().Pipe()
        self._process = child_context().Process(
            target=sim_main,
            args=(child, self._speed, self._batch_s),
            name="simulators",
            daemon=True,
        )
        self._process.start()
        self._launched_at = time.monotonic()
        child.close()  # our copy: the child's end closes with the child, so we see EOF
        self._conn = parent
        for plugin, binding in list(self._bound.items()):
            try:
                self._bind_in_child(plugin, binding)
            except HalError as exc:  # bound once already: log, keep the others running
                log.error("%s", exc)

    def _bind_in_child(self, plugin: str, binding: _Binding) -> None:
        conn = self._conn
        assert conn is not None
        try:
            conn.send(("bind", plugin, binding.ref, binding.seed, binding.block.name))
            ready = wait([conn, self._process.sentinel], BIND_TIMEOUT_S)
            reply = conn.recv() if conn in ready else None
        except (EOFError, OSError):
            reply = None
        if reply is None:
            raise HalError(f"{plugin}: the simulator process did not build {binding.ref!r}")
        if reply[2] is not None:
            raise HalError(f"{plugin}: simulator {binding.ref!r} failed to start: {reply[2]}")

    def _watch(self) -> None:
        backoff = Backoff(0.5, 10.0)
        while not self._stopping.is_set():
            process = self._process
            if process is None:  # between a stop and a start: nothing to watch yet
                self._stopping.wait(0.2)
                continue
            if not wait([process.sentinel], 0.2):
                continue
            if self._stopping.is_set():
                return
            process.join(1.0)
            log.error(
                "simulator process %s %s; every simulated sensor reports a dropout until a new "
                "one starts",
                process.pid,
                describe_exit(process.exitcode),
            )
            if time.monotonic() - self._launched_at > STABLE_S:
                backoff.reset()
            with self._lock:
                self._conn = None
                for binding in self._bound.values():
                    for shared in binding.block.sensors.values():
                        shared.write(shared.values, fresh=False)  # the writer is gone: ours now
            if self._stopping.wait(backoff.next()):
                return
            with self._lock:
                self._launch()
            self.restarts += 1
            log.warning("simulator process restarted (pid %s)", self.pid)

    def _end_process(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        self._send(("stop",))
        process.join(STOP_TIMEOUT_S)
        if process.exitcode is None:
            process.kill()
            process.join(1.0)
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _send(self, msg: tuple[Any, ...]) -> None:
        if self._conn is not None:
            # The process may have just died: the watcher sees it and starts a new one.
            with contextlib.suppress(OSError, ValueError):
                self._conn.send(msg)

    def _binding(self, plugin: str) -> _Binding:
        try:
            return self._bound[plugin]
        except KeyError:
            raise HalError(f"no simulator bound to plugin {plugin!r}") from None
