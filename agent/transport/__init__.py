"""The message-transport seam: the Transport protocol, message types and topic names.

Light on purpose: the HAL, OTA and sync import these names without loading paho-mqtt (the link
in `agent.transport.link` imports it when a connection starts).
"""

from __future__ import annotations

from agent.transport.base import InboundMessage, MessageHandler, Qos, Transport
from agent.transport.topics import Topics

__all__ = ["InboundMessage", "MessageHandler", "Qos", "Topics", "Transport"]
