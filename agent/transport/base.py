"""The message-transport seam: what the agent (HAL, OTA, sync) needs from a broker link."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

Qos = Literal[0, 1]


@dataclass(frozen=True, slots=True)
class InboundMessage:
    """One message received on a subscribed topic filter."""

    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False
    response_topic: str | None = None
    """MQTT 5 response topic the sender asked replies to go to, if any."""
    correlation_data: bytes | None = None
    """MQTT 5 correlation data to echo on the reply, if any."""
    user_properties: tuple[tuple[str, str], ...] = ()
    """MQTT 5 user properties, as sent: claims of the publisher, never verified by the broker."""


MessageHandler = Callable[[InboundMessage], None]
"""Called on the network thread: must be quick; hand slow work to another thread."""


class Transport(Protocol):
    """Publishes and subscribes on the broker; both calls are safe from any thread but a loop's."""

    def subscribe(self, topic_filter: str, handler: MessageHandler, *, qos: Qos = 1) -> None:
        """Deliver messages matching `topic_filter` to `handler`, now and after every reconnect."""

    def unsubscribe(self, topic_filter: str, handler: MessageHandler) -> None:
        """Stop delivering `topic_filter` to `handler`."""

    def publish(
        self,
        topic: str,
        payload: bytes | str,
        *,
        qos: Qos = 0,
        retain: bool = False,
        durable: bool | None = None,
    ) -> None:
        """Send a message; `durable` (default: qos == 1) routes it through the persistent outbox."""


class NetworkDriver(Protocol):
    """Runs the network I/O of many MQTT links on one thread instead of a thread per link."""

    def attach(self, client: Any) -> None:
        """Connect a paho client whose parameters are set, then read, write and reconnect it."""

    def detach(self, client: Any) -> None:
        """Stop driving `client` (its DISCONNECT has been sent or it never connected)."""


def user_properties(props: Any) -> tuple[tuple[str, str], ...]:
    """The MQTT 5 user properties of a message's paho properties, as (key, value) pairs."""
    pairs = getattr(props, "UserProperty", None) if props is not None else None
    if not pairs:
        return ()
    return tuple((str(k), str(v)) for k, v in pairs)
