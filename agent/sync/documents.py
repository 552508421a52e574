"""The documents the sync service reports: retained `state`, `metrics`, flat counters, `status`.

Each is built in one place from the parts that own the facts (engine, link, outbox, commands,
jobs); nothing here keeps a number of its own.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from agent import __version__
from agent.config.sections import AgentConfig
from agent.engine.api import EngineControl
from agent.plugin.channel import OutputChannel
from agent.sync.command_host import CommandHost
from agent.sync.lifecycle import OutboxLifecycle
from agent.sync.periodic import Periodic
from agent.sync.uplink import Uplink

COUNTERS = (
    "connects",
    "disconnects",
    "qos0_dropped",
    "outbox_sent",
    "outbox_acked",
    "outbox_rejected",
    "outbox_telemetry_dropped",
    "outbox_errors",
    "outbox_stores_lost",
    "outbox_rows_lost",
    "events_persisted",
    "channel_events_dropped",
    "channel_telemetry_dropped",
    "telemetry_batches",
    "telemetry_offline_dropped",
    "telemetry_error_dropped",
    "commands_handled",
    "commands_failed",
    "commands_busy",
)
"""Keys of `counters()` that only grow (Prometheus counters); the others are gauges."""


class Documents:
    """Builds the sync documents from the parts of one sync service."""

    def __init__(
        self,
        *,
        config: Callable[[], AgentConfig],
        control: EngineControl,
        channels: Callable[[], Sequence[OutputChannel]],
        uplink: Uplink,
        outbox: OutboxLifecycle,
        commands: CommandHost,
        periodic: Periodic,
    ) -> None:
        self._config = config
        self._control = control
        self._channels = channels
        self._uplink = uplink
        self._outbox = outbox
        self._commands = commands
        self._periodic = periodic
        self._started = time.monotonic()

    def state(self) -> dict[str, Any]:
        """The retained state document: version, accelerator, plugins, active models."""
        cfg = self._config()
        models = {}
        for plugin, slot in self._control.model_slots().items():
            m = slot.model
            models[plugin] = {
                "name": m.name,
                "version": m.version,
                "backend": m.backend,
                "accelerator": m.accelerator,
            }
        plugins = [
            {k: p.get(k) for k in ("name", "state", "rate_hz", "model", "model_version")}
            for p in self._control.plugins()
        ]
        return {
            "ts": round(time.time(), 3),
            "version": __version__,
            "device": cfg.device.id,
            "board": cfg.device.board,
            "group": cfg.device.group,
            "accelerator": cfg.runtime.accelerator,
            "plugins": plugins,
            "models": models,
        }

    def metrics(self) -> dict[str, Any]:
        """The periodic metrics document: loop statistics and sync counters."""
        return {
            "ts": round(time.time(), 3),
            "plugins": self._control.stats(),
            "sync": self.counters(),
        }

    def counters(self) -> dict[str, float]:
        """Flat numbers for a watchdog or Prometheus: connection, publishing, outbox, drops."""
        link, life = self._uplink.link, self._outbox
        ob, snd, ev = life.outbox, life.sender, life.events
        channels = self._channels()
        registry = self._commands.registry
        return {
            "connected": float(link.connected),
            "connects": float(link.connects),
            "disconnects": float(link.disconnects),
            "last_publish_ts": max(
                snd.last_publish_ts if snd else 0.0, self._uplink.last_direct_publish_ts
            ),
            "outbox_depth": float(ob.depth if ob else 0),
            "outbox_bytes": float(ob.total_bytes if ob else 0),
            "outbox_full": float(bool(ob and ob.full)),
            "outbox_inflight": float(snd.inflight if snd else 0),
            "outbox_inflight_bytes": float(snd.inflight_bytes if snd else 0),
            "outbox_window_bytes": float(snd.window_bytes if snd else 0),
            "uplink_bytes_per_s": float(round(snd.rate, 1) if snd else 0.0),
            "qos0_dropped": float(link.qos0_dropped),
            "outbox_sent": float(snd.sent if snd else 0),
            "outbox_acked": float(snd.acked if snd else 0),
            "outbox_rejected": float(snd.rejected if snd else 0),
            "outbox_telemetry_dropped": float(ob.telemetry_dropped if ob else 0),
            "outbox_errors": float(ob.errors if ob else 0),
            "outbox_stores_lost": float(ob.stores_lost if ob else 0),
            "outbox_rows_lost": float(ob.rows_lost if ob else 0),
            "outbox_failing": float(bool(ob and ob.last_error) or bool(life.open_error)),
            "events_persisted": float(ev.persisted if ev else 0),
            "events_backlog": float(ev.backlog if ev else 0),
            "durable_backlog": float(len(self._uplink.durable)),
            "channel_events_dropped": float(sum(c.events_dropped for c in channels)),
            "channel_telemetry_dropped": float(sum(c.telemetry_dropped for c in channels)),
            "telemetry_batches": float(life.telemetry_batches),
            "telemetry_offline_dropped": float(life.telemetry_offline_dropped),
            "telemetry_error_dropped": float(life.telemetry_error_dropped),
            "commands_handled": float(registry.handled),
            "commands_failed": float(registry.failed),
            "commands_busy": float(self._commands.busy),
        }

    def status(self) -> dict[str, Any]:
        """The status document (the `status` command): connection, outbox, jobs, plugins."""
        m = self._config().mqtt
        link = self._uplink.link
        ob = self._outbox.outbox
        return {
            "enabled": m.enabled,
            "connected": link.connected,
            "broker": link.broker,
            "protocol": m.protocol,
            "tls": m.tls is not None,
            "client_id": link.client_id,
            "last_connect_ts": link.last_connect_ts or None,
            "last_error": link.last_error or None,
            "outbox": {
                "path": str(ob.path) if ob else None,
                "max_bytes": ob.max_bytes if ob else None,
                **(ob.counts() if ob else {}),
                "last_error": (ob.last_error if ob else self._outbox.open_error) or None,
                "error_since": ob.failing_since if ob else None,
            },
            "counters": self.counters(),
            "jobs": self._periodic.jobs(),
            "commands": self._commands.registry.names(),
            "plugins": self._control.plugins(),
            "uptime_s": round(self.uptime_s(), 3),
        }

    def uptime_s(self) -> float:
        """Seconds since the sync service was built."""
        return time.monotonic() - self._started
