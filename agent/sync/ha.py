"""The Home Assistant discovery publisher: retained configs on connect and on HA's birth."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from agent.config.sections import AgentConfig
from agent.plugin.channel import OutputChannel
from agent.sync.discovery import PluginEntities, declared_entities, discovery_messages
from agent.transport.base import InboundMessage
from agent.transport.link import MqttLink
from agent.transport.topics import Topics


class HomeAssistantPublisher:
    """Publishes discovery configs on the sync thread whenever they were asked for."""

    def __init__(
        self,
        link: MqttLink,
        topics: Topics,
        *,
        config: Callable[[], AgentConfig],
        channels: Callable[[], Sequence[OutputChannel]],
        wake: threading.Event,
    ) -> None:
        self._link = link
        self._topics = topics
        self._config = config
        self._channels = channels
        self._wake = wake
        self._wanted = False
        self.published = 0
        """Times the whole set of configs was published."""
        if config().mqtt.home_assistant:
            link.subscribe(topics.ha_status, self._on_ha_status, qos=1)

    def request(self) -> None:
        """Ask for a publish on the sync thread's next step (any thread; repeated asks merge)."""
        if self._config().mqtt.home_assistant:
            self._wanted = True
            self._wake.set()

    def run_if_requested(self) -> None:
        """Publish now if asked to since the last publish (sync thread)."""
        if self._wanted:
            self._wanted = False
            self.publish()

    def publish(self) -> None:
        """Publish the retained Home Assistant discovery configs."""
        plugins = [
            PluginEntities(c.plugin, tuple(c.fields), declared_entities(c.plugin))
            for c in self._channels()
        ]
        for topic, payload in discovery_messages(self._topics, self._config(), plugins):
            self._link.publish(topic, payload, qos=1, retain=True)
        self.published += 1

    def _on_ha_status(self, msg: InboundMessage) -> None:
        if msg.payload.strip().lower() == b"online":
            self.request()
