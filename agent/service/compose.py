"""Build the whole agent from a config: loops, MQTT sync, OTA, watchdog and service manager.

One function says what runs with what, so `edge-agent run`, the fleet simulator and the
end-to-end tests all start the same agent.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from agent.config.sections import AgentConfig
from agent.plugin.registry import PluginRegistry
from agent.service.app import AgentApp
from agent.service.notify import Notifier
from agent.service.watchdog import HealthCheck, Watchdog, loops_ticking

log = logging.getLogger(__name__)


class _OtaWiring:
    """Starts the OTA adapter once sync runs, and closes the OTA service at stop."""

    def __init__(self, adapter: Any, service: Any) -> None:
        self._adapter = adapter
        self._service = service

    def start(self) -> None:
        self._adapter.start()

    def stop(self, timeout: float = 1.0) -> None:
        self._adapter.stop(timeout)
        self._service.close(timeout)


class _WatchdogService:
    """The watchdog as an attached service: READY=1 after start, STOPPING=1 at stop."""

    def __init__(self, app: AgentApp, notifier: Notifier, checks: list[HealthCheck]) -> None:
        self._app = app
        self._notifier = notifier
        self.watchdog = Watchdog(notifier, checks, status=lambda: status_line(app))

    def start(self) -> None:
        self.watchdog.start()

    def announce_ready(self) -> None:
        """Tell systemd we are ready (after every loop ticked)."""
        self._notifier.ready(status_line(self._app))

    def stop(self, timeout: float = 1.0) -> None:
        self._notifier.stopping()
        self.watchdog.stop()


def status_line(app: AgentApp) -> str:
    """One line for systemd's STATUS= and the live view: plugins running, how late the worst
    loop is, the broker link and the outbox depth."""
    plugins = app.host.plugins()
    running = sum(1 for p in plugins if p.get("state") == "running")
    stats = app.host.stats()
    worst = max((s["lateness_us"]["p99"] for s in stats.values()), default=0.0)
    sync = getattr(app, "sync", None)
    link = ""
    if sync is not None:
        counters = sync.counters()
        link = ", mqtt up" if counters.get("connected") else ", mqtt down"
        link += f", outbox {counters.get('outbox_depth', 0):.0f}"
        if counters.get("outbox_failing"):
            link += ", outbox writes failing"
    return f"{running}/{len(plugins)} plugins running, lateness p99 {worst:.0f} us{link}"


def _schedules(config: AgentConfig, sync: Any) -> Any:
    """The user's schedules, checked, run as commands on the sync service's command worker and
    reported on its `schedule` channel. Raises ConfigError naming every bad schedule (`edge-agent
    config check` says the same)."""
    from agent.plugin.channel import OutputChannel
    from agent.scheduler import CHANNEL, Schedules, check_schedules
    from agent.sync.builtins import builtin_command_args

    check_schedules(config, builtin_command_args())
    channel = OutputChannel(CHANNEL, (), capacity=1, events=256)
    sync.add_channel(channel)
    return Schedules(config.schedule, sync.submit_command, channel=channel)


def build_agent(
    config: AgentConfig,
    *,
    config_path: Path | None = None,
    notifier: Notifier | None = None,
    registry: PluginRegistry | None = None,
) -> AgentApp:
    """The agent as `edge-agent run` starts it; call `start()` on the result."""
    if config.ota.trusted_keys:
        # Before any model loads: a crash mid-update must leave a complete version active.
        from agent.ota import recover

        recovered = recover(config.state_dir)
        if recovered:
            log.info("ota: active versions %s", recovered)
    app = AgentApp(config, registry=registry)
    checks: list[HealthCheck] = [loops_ticking(app.host.tick_counters)]
    if config.mqtt.enabled:
        from agent.sync.service import SyncService

        sync = SyncService(config, app.host, config_path=config_path)
        app.sync = sync
        app.commands = sync.commands
        mqtt_hal: Any = app.hal.backend("mqtt")
        if mqtt_hal is not None:
            mqtt_hal.use_transport(sync)
        app.attach(sync)
        if config.ota.trusted_keys:
            from agent.ota.mqtt import OtaMqttAdapter
            from agent.ota.service import OtaService, RollbackArgs

            ota = OtaService(config, engine=app.host)
            adapter = OtaMqttAdapter(sync, ota)
            sync.register_command(
                "model.rollback",
                ota.rollback_command,
                RollbackArgs,
                description="roll a model back to its previous version",
            )
            app.attach(_OtaWiring(adapter, ota))
        if config.schedule:
            app.attach(_schedules(config, sync))
    elif config.schedule:
        from agent.scheduler import check_schedules

        check_schedules(config, {})  # raises: schedules need mqtt.enabled (docs/schedules.md)
    if config.service.prometheus_port is not None:
        from agent.service.prometheus import PrometheusEndpoint

        app.attach(PrometheusEndpoint(app, config.service.prometheus_port))
    notifier = notifier or Notifier()
    if config.service.watchdog:
        dog = _WatchdogService(app, notifier, checks)
        app.watchdog = dog
        app.attach(dog)
    return app
