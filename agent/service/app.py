"""The composed agent: HAL, models, plugin host, and the services attached around them.

Start order: HAL backends (simulators start stepping), the plugin host (models loaded, plugins
set up, loops started), then attached services (MQTT sync, watchdog, ...). Stop goes the other
way round. Nothing here needs an MQTT broker: sync attaches when the lead wires it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from agent.config.sections import AgentConfig
from agent.engine.host import PluginHost
from agent.hal.base import HalBackend
from agent.hal.router import Hal
from agent.plugin.registry import PluginRegistry
from agent.sync.commands import CommandRegistry
from agent.sync.reload import apply_reload

log = logging.getLogger(__name__)


class Service(Protocol):
    """A component started after the loops and stopped before them (e.g. MQTT sync)."""

    def start(self) -> None:
        """Start background work."""

    def stop(self, timeout: float = 1.0) -> None:
        """Stop within `timeout` seconds."""


class AgentApp:
    """Everything `edge-agent run` starts, as one object with start/stop."""

    def __init__(
        self,
        config: AgentConfig,
        *,
        registry: PluginRegistry | None = None,
        hal_backends: Mapping[str, HalBackend] | None = None,
    ) -> None:
        self.config = config
        self.hal = Hal(config.hal, backends=_hal_backends(config, hal_backends))
        self.host = PluginHost(config, hal=self.hal, registry=registry)
        self.services: list[Service] = []
        # Set by agent.service.compose.build_agent when MQTT sync and the watchdog are attached.
        self.sync: Any = None
        self.watchdog: Any = None
        self.commands: CommandRegistry | None = None
        """The remote commands (built-in, OTA's, ...), while MQTT sync is attached."""
        self.started_at: float | None = None

    def attach(self, service: Service) -> None:
        """Add a service to start after the loops and stop before them."""
        self.services.append(service)

    def start(self) -> None:
        """Start the HAL, the plugin loops, then every attached service."""
        self.started_at = time.monotonic()
        self.hal.start()
        try:
            self.host.start()
            for service in self.services:
                service.start()
        except BaseException:
            self.stop(timeout=1.0)
            raise

    def submit_command(
        self, name: str, payload: bytes, reply: Callable[[dict[str, Any]], None]
    ) -> bool:
        """Run a command on the same worker as MQTT commands (`reply` gets its reply dict);
        False when the worker's queue is full or no sync (so no worker) is attached."""
        if self.sync is None:
            return False
        submitted: bool = self.sync.submit_command(name, payload, reply)
        return submitted

    def apply_config(self, config: AgentConfig) -> dict[str, Any]:
        """Apply a reloaded config (SIGHUP, `config.reload`): what changed, what waits for a
        restart; an error changes nothing and is raised."""
        if self.sync is not None:
            result: dict[str, Any] = self.sync.apply_config(config)
            return result
        # No sync: compared with the config the process started with, which is what runs.
        return apply_reload(self.host, self.config, config)

    def wait_ready(self, timeout: float) -> bool:
        """True once every enabled plugin's loop has ticked."""
        return self.host.wait_ready(timeout)

    def stop(self, timeout: float = 1.0) -> None:
        """Stop the loops (plugins torn down, models closed), then services, then the HAL.

        Loops go first so that what a plugin emitted in its last ticks is still drained by sync
        into the durable outbox before sync stops.
        """
        deadline = time.monotonic() + timeout
        self.host.stop(timeout=_left(deadline, share=0.5))
        for service in reversed(self.services):
            try:
                service.stop(timeout=_left(deadline))
            except Exception:  # one service failing to stop must not keep the others running
                log.exception("stopping %s failed", type(service).__name__)
        self.hal.stop()


def _hal_backends(
    config: AgentConfig, given: Mapping[str, HalBackend] | None
) -> dict[str, HalBackend]:
    """The given backends, plus the mqtt one when a device needs it and none was given."""
    backends = dict(given or {})
    hal = config.hal
    uses_mqtt = hal.backend == "mqtt" or any(d.backend == "mqtt" for d in hal.devices.values())
    if uses_mqtt and "mqtt" not in backends:
        # Imported only here: paho is loaded only when a device really comes over MQTT. It runs
        # its own connection until sync hands it one (`MqttHal.use_transport`).
        from agent.hal.mqtt import MqttHal

        backends["mqtt"] = MqttHal(config)
    return backends


def _left(deadline: float, share: float = 1.0) -> float:
    return max(0.05, (deadline - time.monotonic()) * share)
