"""The rows of the outbox: a message to store, its drop-policy class, a message read back."""

from __future__ import annotations

from enum import IntEnum
from typing import NamedTuple

ROW_OVERHEAD = 32
"""Bytes counted per row on top of payload and topic (id, class, flags, index entry)."""


class MessageClass(IntEnum):
    """Drop policy class of a stored message."""

    TELEMETRY = 0
    """Dropped oldest first when over the telemetry share."""
    EVENT = 1
    """Never dropped; reported when the bound is reached."""
    OTHER = 2
    """Other durable messages (OTA status, ...): never dropped, like events."""


class Message:
    """A message to store: where it goes and how (its size computed once: hot on the sync path)."""

    __slots__ = ("cls", "payload", "qos", "retain", "size", "topic")

    def __init__(
        self,
        cls: MessageClass,
        topic: str,
        payload: bytes,
        qos: int = 1,
        retain: bool = False,
    ) -> None:
        self.cls = cls
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.retain = retain
        self.size = len(payload) + len(topic) + ROW_OVERHEAD
        """Bytes this message counts against the bound."""


class StoredMessage(NamedTuple):
    """A message read back from the outbox, with its id (the replay order)."""

    id: int
    cls: int
    topic: str
    payload: bytes
    qos: int
    retain: int
