"""MQTT sync and remote control: status, state, telemetry, events, commands, durable outbox.

Importing this package does not import paho-mqtt or APScheduler; they load when a service starts.
"""

from __future__ import annotations

from agent.sync.base import InboundMessage, MessageHandler, Transport
from agent.sync.commands import CommandFailed, NoArgs
from agent.sync.discovery import HaEntity
from agent.sync.outbox import Outbox, OutboxError
from agent.sync.service import SyncService
from agent.sync.topics import Topics

__all__ = [
    "CommandFailed",
    "HaEntity",
    "InboundMessage",
    "MessageHandler",
    "NoArgs",
    "Outbox",
    "OutboxError",
    "SyncService",
    "Topics",
    "Transport",
]
