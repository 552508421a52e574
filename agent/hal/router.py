"""The HAL router: each plugin's devices, each from the backend its config names.

`Hal` is the one place that picks a backend per device: `hal.devices["<plugin>.<device>"]`
overrides `hal.backend`. The `sim` backend is built here on demand (one simulator per plugin,
from the plugin's `simulator` attribute; stepped by a thread, or by a process of its own with
`hal.sim_process`); other backends (`mqtt`, which needs the MQTT link) are
handed in ready-made by whoever owns their connection.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from agent.config.sections import HalConfig
from agent.errors import HalError
from agent.hal.base import Actuator, ActuatorSpec, HalBackend, Sensor, SensorSpec

if TYPE_CHECKING:
    from agent.hal.simulator import SimBackend


class Hal:
    """Every plugin's devices, each created by the backend configured for it."""

    def __init__(
        self, config: HalConfig, *, backends: Mapping[str, HalBackend] | None = None
    ) -> None:
        self.config = config
        self._backends: dict[str, HalBackend] = dict(backends or {})
        self._started = False

    def backend_name(self, plugin: str, device: str) -> str:
        """The backend that provides `device` of `plugin`."""
        override = self.config.devices.get(f"{plugin}.{device}")
        return override.backend if override is not None else self.config.backend

    def devices_for(
        self,
        plugin: str,
        *,
        simulator: str | None,
        sensors: Mapping[str, SensorSpec],
        actuators: Mapping[str, ActuatorSpec],
    ) -> tuple[dict[str, Sensor], dict[str, Actuator]]:
        """Create the sensors and actuators of one plugin; HalError naming the device otherwise."""
        names = [*sensors, *actuators]
        if any(self.backend_name(plugin, d) == "sim" for d in names):
            self._bind_simulator(plugin, simulator)
        made_sensors = {
            name: self._backend(plugin, name).sensor(plugin, name, spec)
            for name, spec in sensors.items()
        }
        made_actuators = {
            name: self._backend(plugin, name).actuator(plugin, name, spec)
            for name, spec in actuators.items()
        }
        return made_sensors, made_actuators

    def backend(self, name: str) -> HalBackend | None:
        """The backend called `name`, if one was given or built."""
        return self._backends.get(name)

    def release(self, plugin: str) -> None:
        """Forget the simulator of a plugin that was removed."""
        from agent.hal.simulator import SimBackend

        backend = self._backends.get("sim")
        if isinstance(backend, SimBackend):
            backend.unbind(plugin)

    def start(self) -> None:
        """Start every backend's background work."""
        for backend in self._backends.values():
            backend.start()
        self._started = True

    def stop(self) -> None:
        """Stop every backend."""
        for backend in self._backends.values():
            backend.stop()
        self._started = False

    def _backend(self, plugin: str, device: str) -> HalBackend:
        name = self.backend_name(plugin, device)
        backend = self._backends.get(name)
        if backend is None:
            raise HalError(
                f"{plugin}.{device}: HAL backend {name!r} is not available "
                f"(the {name} backend comes with MQTT sync; enable [mqtt] or use 'sim')"
            )
        return backend

    def _sim_backend(self) -> SimBackend:
        from agent.hal.simulator import SimBackend

        backend = self._backends.get("sim")
        if backend is None:
            backend = self._new_sim_backend()
            self._backends["sim"] = backend
            if self._started:
                backend.start()
        if not isinstance(backend, SimBackend):
            raise HalError(f"the 'sim' backend is a {type(backend).__name__}, not a SimBackend")
        return backend

    def _new_sim_backend(self) -> SimBackend:
        # Imported here: an agent on real devices loads neither.
        if self.config.sim_process:
            from agent.hal.sim_process import SimProcessHal

            return SimProcessHal(speed=self.config.sim_speed)
        from agent.hal.sim import SimHal

        return SimHal(speed=self.config.sim_speed)

    def _bind_simulator(self, plugin: str, ref: str | None) -> None:
        backend = self._sim_backend()
        if backend.is_bound(plugin):
            return
        if ref is None:
            raise HalError(
                f"plugin {plugin!r} declares no simulator, so the sim HAL cannot provide its "
                "devices; set hal.devices overrides to another backend"
            )
        backend.bind_ref(plugin, ref, self.config.sim_seed)
