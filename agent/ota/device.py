"""A device's OTA side without the rest of the agent: the receiver, its pipeline and the MQTT
protocol over any Transport. For fleet simulators that run many light devices in one process,
and for tools; the agent itself composes OtaService and OtaMqttAdapter in service/compose.py."""

from __future__ import annotations

from typing import Any

from agent.config.sections import AgentConfig
from agent.ota.mqtt import OtaMqttAdapter
from agent.ota.patience import BroadcastPatience
from agent.ota.sandbox import SandboxLimits
from agent.ota.service import OtaService
from agent.ota.versions import recover
from agent.transport import Qos, Topics, Transport


class LinkTransport:
    """A bare MqttLink as a Transport: every publish goes straight to the link (no outbox)."""

    def __init__(self, link: Any) -> None:
        self.link = link

    def subscribe(self, topic_filter: str, handler: Any, *, qos: Qos = 1) -> None:
        """Subscribe on the link."""
        self.link.subscribe(topic_filter, handler, qos=qos)

    def unsubscribe(self, topic_filter: str, handler: Any) -> None:
        """Unsubscribe on the link."""
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
        """Publish on the link; `durable` is ignored (there is no outbox)."""
        self.link.publish(topic, payload, qos=qos, retain=retain)


class OtaDevice:
    """One device's OTA receiver on `transport`: models are installed under config.state_dir,
    validated in a child process, never swapped into loops (there are none)."""

    def __init__(
        self,
        config: AgentConfig,
        transport: Transport,
        *,
        limits: SandboxLimits | None = None,
        stall_s: float = 2.0,
        give_up_s: float = 60.0,
        broadcast: BroadcastPatience | None = None,
    ) -> None:
        recover(config.state_dir)
        self.service = OtaService(config, limits=limits)
        topics = Topics(config.mqtt.topic_root, config.device.id, config.device.group)
        self.adapter = OtaMqttAdapter(
            transport,
            self.service,
            topics,
            stall_s=stall_s,
            give_up_s=give_up_s,
            broadcast=broadcast,
        )

    def start(self) -> None:
        """Subscribe and start receiving."""
        self.adapter.start()

    def status(self, model: str) -> dict[str, Any]:
        """The last update's status of `model`."""
        return self.service.status(model)

    def stop(self) -> None:
        """Stop receiving; an update being validated is abandoned."""
        self.adapter.stop()
        self.service.close()
