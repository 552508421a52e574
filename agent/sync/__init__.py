"""MQTT sync and remote control: status, state, telemetry, events, commands, durable outbox.

Light on purpose: importing `agent.sync` or one of its modules loads neither paho-mqtt nor the
whole service. The service is `agent.sync.service.SyncService`; the transport seam and topic
names it implements live below it, in `agent.transport`.
"""

from __future__ import annotations

from agent.sync.commands import CommandFailed, CommandRegistry, NoArgs

__all__ = ["CommandFailed", "CommandRegistry", "NoArgs"]
