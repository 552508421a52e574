"""The sync service's use of the broker link: the `Transport` seam, presence and PUBACK routing."""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Callable

from agent import __version__
from agent.config.sections import AgentConfig
from agent.sync.outbox import Message, MessageClass
from agent.sync.payloads import to_json
from agent.transport.base import MessageHandler, Qos
from agent.transport.link import MqttLink
from agent.transport.topics import Topics


class Uplink:
    """Publishes directly or through the outbox, subscribes, and says online/offline.

    Durable messages wait in `durable` until the sync thread stores them (`wake` tells it).
    """

    def __init__(self, config: AgentConfig, topics: Topics, wake: threading.Event) -> None:
        self.topics = topics
        self.link = MqttLink(config, will=(topics.status, to_json({"state": "offline"})))
        self.durable: deque[Message] = deque()
        """Durable messages not stored yet (the sync thread moves them into the outbox)."""
        self.last_direct_publish_ts = 0.0
        self.on_ack: Callable[[int, bool], None] | None = None
        """Where PUBACKs of outbox messages go (the sender, once the outbox is open)."""
        self.wake = wake
        """Set to wake the sync thread (a durable message waits, a PUBACK came)."""
        self._offline_mid: int | None = None
        self._offline_acked = threading.Event()
        self._recent_acks: deque[int] = deque(maxlen=64)
        self.link.on_ack = self._ack

    # -- the Transport seam (HAL, OTA) --------------------------------------------------------

    def subscribe(self, topic_filter: str, handler: MessageHandler, *, qos: Qos = 1) -> None:
        """Deliver messages on `topic_filter` to `handler` (on the network thread: be quick)."""
        self.link.subscribe(topic_filter, handler, qos=qos)

    def unsubscribe(self, topic_filter: str, handler: MessageHandler) -> None:
        """Stop delivering `topic_filter` to `handler`."""
        self.link.unsubscribe(topic_filter, handler)

    def publish(
        self,
        topic: str,
        payload: bytes | str,
        *,
        qos: Qos = 0,
        retain: bool = False,
        durable: bool | None = None,
    ) -> None:
        """Publish; durable messages (default: QoS 1) go through the outbox and survive crashes.

        A durable message is stored by the sync thread within a few milliseconds; it is never
        dropped for lack of room (it waits in memory, reported as outbox `full`).
        """
        data = payload.encode() if isinstance(payload, str) else payload
        if durable is None:
            durable = qos == 1
        if durable:
            self.durable.append(Message(MessageClass.OTHER, topic, data, 1, retain))
            self.wake.set()
            return
        if self.link.publish(topic, data, qos=qos, retain=retain) is not None:
            self.last_direct_publish_ts = time.time()

    # -- presence -------------------------------------------------------------------------------

    def announce_online(self, config: AgentConfig) -> None:
        """Publish the retained `online` status (on every connect)."""
        payload = {
            "state": "online",
            "ts": round(time.time(), 3),
            "version": __version__,
            "device": config.device.id,
            "group": config.device.group,
            "client_id": self.link.client_id,
            "pid": os.getpid(),
        }
        self.link.publish(self.topics.status, to_json(payload), qos=1, retain=True)

    def announce_offline(self, timeout: float) -> None:
        """Publish the retained `offline` status and wait up to `timeout` for its PUBACK."""
        if not self.link.connected:
            return
        self._offline_acked.clear()
        payload = to_json({"state": "offline", "ts": round(time.time(), 3), "reason": "shutdown"})
        mid = self.link.publish(self.topics.status, payload, qos=1, retain=True)
        self._offline_mid = mid
        # The PUBACK may have come before `publish` returned: then it is among the recent acks.
        if mid is not None and mid not in self._recent_acks:
            self._offline_acked.wait(timeout)

    def _ack(self, mid: int, ok: bool) -> None:
        self._recent_acks.append(mid)
        if mid == self._offline_mid:
            self._offline_acked.set()
        forward = self.on_ack
        if forward is not None:
            forward(mid, ok)
