"""The `sim` HAL backend: devices bound in-process to a simulator from sim/."""

from __future__ import annotations

import importlib
import threading
import time

from agent.errors import HalError
from agent.hal.base import Actuator, ActuatorSpec, Buffer, HalBackend, Sensor, SensorSpec
from sim.base import Simulator


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


def load_simulator(ref: str, seed: int) -> Simulator:
    """Instantiate the simulator named `module:Class` and reset it with `seed`."""
    module, _, cls = ref.partition(":")
    try:
        sim_cls = getattr(importlib.import_module(module), cls)
    except (ImportError, AttributeError) as exc:
        raise HalError(f"simulator {ref!r} not found: {exc}") from None
    sim: Simulator = sim_cls()
    sim.reset(seed)
    return sim


def bind_device_check(sim: Simulator, name: str, want: tuple[int, ...], kind: str) -> None:
    """Raise HalError unless the simulator offers device `name` with shape `want`."""
    table = sim.sensors if kind == "sensor" else sim.actuators
    spec = table.get(name)
    if spec is None:
        raise HalError(f"{type(sim).__name__} has no {kind} {name!r} (has {sorted(table)})")
    if tuple(spec.shape) != tuple(want):
        raise HalError(f"{kind} {name!r}: simulator shape {spec.shape}, plugin expects {want}")


class SimHal(HalBackend):
    """Real-time sim backend: one simulator per plugin, stepped to wall-clock time by a thread.

    Stepping happens off the plugin loops, in batches, so a device read is a plain copy.
    """

    def __init__(
        self, simulators: dict[str, Simulator], *, speed: float = 1.0, batch_s: float = 0.005
    ) -> None:
        self._sims = simulators
        self._speed = speed
        self._batch_s = batch_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def simulator(self, plugin: str) -> Simulator:
        """The simulator bound to `plugin`."""
        try:
            return self._sims[plugin]
        except KeyError:
            raise HalError(f"no simulator bound to plugin {plugin!r}") from None

    def sensor(self, plugin: str, name: str, spec: SensorSpec) -> Sensor:
        """A sensor of the plugin's simulator."""
        sim = self.simulator(plugin)
        bind_device_check(sim, name, spec.shape, "sensor")
        return SimSensor(sim, name, spec)

    def actuator(self, plugin: str, name: str, spec: ActuatorSpec) -> Actuator:
        """An actuator of the plugin's simulator."""
        sim = self.simulator(plugin)
        bind_device_check(sim, name, spec.shape, "actuator")
        return SimActuator(sim, name, spec)

    def start(self) -> None:
        """Start stepping every simulator in real time (times `speed`)."""
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
        start = time.perf_counter()
        origin = {name: sim.t for name, sim in self._sims.items()}
        while not self._stop.wait(self._batch_s):
            elapsed = (time.perf_counter() - start) * self._speed
            for name, sim in self._sims.items():
                target = elapsed * sim.realtime_speed
                # Cap the catch-up so a long pause does not freeze the thread for seconds.
                budget = 2000
                while sim.t - origin[name] < target and budget:
                    sim.step()
                    budget -= 1
