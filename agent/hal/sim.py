"""The `sim` HAL backend: devices bound in-process to a simulator from sim/."""

from __future__ import annotations

import threading
import time

from agent.errors import HalError
from agent.hal.base import Actuator, ActuatorSpec, Buffer, Sensor, SensorSpec
from agent.hal.simulator import SimBackend, Simulator, check_device, load_simulator


class SimSensor(Sensor):
    """Reads one sensor of a simulator."""

    def __init__(self, sim: Simulator, name: str, spec: SensorSpec) -> None:
        self.spec = spec
        self._read = sim.read
        self._name = name

    def read_into(self, out: Buffer) -> bool:
        """Copy the simulator's current reading."""
        return self._read(self._name, out)


class SimActuator(Actuator):
    """Drives one actuator of a simulator."""

    def __init__(self, sim: Simulator, name: str, spec: ActuatorSpec) -> None:
        self.spec = spec
        self._actuate = sim.actuate
        self._name = name

    def write(self, value: Buffer) -> None:
        """Hand the command to the simulator; it applies from its next step."""
        self._actuate(self._name, value)


class SimHal(SimBackend):
    """Real-time sim backend: one simulator per plugin, stepped to wall-clock time by a thread.

    Stepping happens off the plugin loops, in batches, so a device read is a plain copy.
    Simulators may be bound while the thread runs (a plugin started later): the thread works on
    a copy of the table, replaced whole on every bind, and each simulator keeps its own time
    origin.
    """

    def __init__(
        self,
        simulators: dict[str, Simulator] | None = None,
        *,
        speed: float = 1.0,
        batch_s: float = 0.005,
    ) -> None:
        # plugin -> (simulator, sim time at bind, wall time at bind or None before start)
        self._bound: dict[str, tuple[Simulator, float, float | None]] = {}
        self._speed = speed
        self._batch_s = batch_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        for plugin, sim in (simulators or {}).items():
            self.bind(plugin, sim)

    def bind(self, plugin: str, sim: Simulator) -> None:
        """Give `plugin` its simulator (also while running: it is stepped from now on)."""
        started = time.perf_counter() if self._thread is not None else None
        table = dict(self._bound)
        table[plugin] = (sim, sim.t, started)
        self._bound = table

    def bind_ref(self, plugin: str, ref: str, seed: int) -> None:
        """Give `plugin` a new simulator of class `ref`, reset with `seed`."""
        self.bind(plugin, load_simulator(ref, seed))

    def unbind(self, plugin: str) -> None:
        """Stop stepping the simulator of `plugin`."""
        table = dict(self._bound)
        table.pop(plugin, None)
        self._bound = table

    def is_bound(self, plugin: str) -> bool:
        """True when `plugin` has a simulator."""
        return plugin in self._bound

    def simulator(self, plugin: str) -> Simulator:
        """The simulator bound to `plugin`."""
        try:
            return self._bound[plugin][0]
        except KeyError:
            raise HalError(f"no simulator bound to plugin {plugin!r}") from None

    def sensor(self, plugin: str, name: str, spec: SensorSpec) -> Sensor:
        """A sensor of the plugin's simulator."""
        sim = self.simulator(plugin)
        check_device(sim, name, spec.shape, "sensor")
        return SimSensor(sim, name, spec)

    def actuator(self, plugin: str, name: str, spec: ActuatorSpec) -> Actuator:
        """An actuator of the plugin's simulator."""
        sim = self.simulator(plugin)
        check_device(sim, name, spec.shape, "actuator")
        return SimActuator(sim, name, spec)

    def start(self) -> None:
        """Start stepping every simulator in real time (times `speed`)."""
        if self._thread is not None:
            return
        now = time.perf_counter()
        self._bound = {p: (s, s.t, now) for p, (s, _, _) in self._bound.items()}
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="sim-hal", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop stepping."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self._batch_s):
            now = time.perf_counter()
            for sim, origin, started in self._bound.values():
                if started is None:
                    continue
                target = (now - started) * self._speed * sim.realtime_speed
                # Cap the catch-up so a long pause does not freeze the thread for seconds.
                budget = 2000
                while sim.t - origin < target and budget:
                    sim.step()
                    budget -= 1
