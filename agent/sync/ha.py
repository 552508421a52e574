"""The Home Assistant discovery publisher: retained configs on connect and on HA's birth.

`homeassistant/status` is fleet-wide and anyone may write `online` to it: 4,320 births in 5 s
once gave ~194,000 retained publishes. Configs are published at most once per `WINDOW_S`; a
birth waits a random `JITTER_S` more, so a fleet does not answer one birth all at once.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Sequence

from agent.config.sections import AgentConfig
from agent.plugin.channel import OutputChannel
from agent.sync.discovery import PluginEntities, declared_entities, discovery_messages
from agent.transport.base import InboundMessage
from agent.transport.link import MqttLink
from agent.transport.topics import Topics

WINDOW_S = 30.0
"""At most one publish of the configs per this many seconds, however many births arrive."""
JITTER_S = 5.0
"""A birth is answered after a random delay of up to this (spreads a fleet's answers)."""


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
        self._due = 0.0  # monotonic time the wanted publish may happen
        self._last = -float("inf")  # monotonic time of the last publish
        self.window_s = WINDOW_S
        self.jitter_s = JITTER_S
        self.published = 0
        """Times the whole set of configs was published."""
        self.birth_messages = 0
        """`online` messages seen on Home Assistant's status topic."""
        if config().mqtt.home_assistant:
            link.subscribe(topics.ha_status, self._on_ha_status, qos=1)

    def request(self, *, jitter: bool = False) -> None:
        """Ask for a publish (any thread; repeated asks merge): at the sync thread's next step,
        or when the window since the last publish ends, plus a random delay if `jitter`."""
        if not self._config().mqtt.home_assistant or self._wanted:
            return
        delay = random.uniform(0.0, self.jitter_s) if jitter else 0.0
        self._due = max(time.monotonic() + delay, self._last + self.window_s)
        self._wanted = True
        self._wake.set()

    def run_if_requested(self) -> None:
        """Publish now if asked to and due (sync thread)."""
        if self._wanted and time.monotonic() >= self._due:
            self._wanted = False
            self._last = time.monotonic()
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
            self.birth_messages += 1
            self.request(jitter=True)
