"""The operator's MQTT client (`ota publish`, `fleet status`, the simulators): one factory that
speaks MQTT 5 where the broker does and falls back to 3.1.1 where it does not.

NATS 2.9 answers an MQTT 5 CONNECT with reason 132 ("unsupported protocol version"); RabbitMQ
3.10 closes the socket without a CONNACK. With `protocol="auto"` either one makes the factory
try again at once with 3.1.1, so an operator never needs to know which broker the fleet uses.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

OperatorProtocol = Literal["auto", "5", "3.1.1"]
PROTOCOLS: tuple[OperatorProtocol, ...] = ("auto", "5", "3.1.1")


@dataclass(frozen=True)
class OperatorBroker:
    """Where and how an operator tool connects."""

    host: str
    port: int = 1883
    protocol: OperatorProtocol = "auto"
    username: str | None = None
    password: str | None = None
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    keepalive: int = 30

    @property
    def address(self) -> str:
        """host:port."""
        return f"{self.host}:{self.port}"


@dataclass
class _Outcome:
    done: threading.Event = field(default_factory=threading.Event)
    ok: bool = False
    reason: str = "no answer"


def connect_operator(
    broker: OperatorBroker,
    *,
    name: str = "edge-operator",
    client_id: str | None = None,
    on_connect: Callable[[Any], None] | None = None,
    on_message: Callable[[Any, Any, Any], None] | None = None,
    max_inflight: int | None = None,
    timeout: float = 20.0,
) -> Any:
    """A connected paho client with its network loop running.

    `on_connect(client)` runs on every (re)connect: subscribe there. Raises ConnectionError
    naming the broker and why, when neither allowed protocol gets a connection.
    """
    versions = ["5", "3.1.1"] if broker.protocol == "auto" else [broker.protocol]
    cid = client_id or f"{name}-{uuid.uuid4().hex[:8]}"
    reasons = []
    for version in versions:
        client, outcome = _attempt(broker, version, cid, on_connect, on_message, max_inflight)
        if outcome.done.wait(timeout) and outcome.ok:
            client.operator_protocol = version  # which one answered, for reports
            return client
        client.loop_stop()
        client.disconnect()
        reasons.append(f"MQTT {version}: {outcome.reason}")
    raise ConnectionError(
        f"cannot connect to the broker at {broker.address} ({'; '.join(reasons)})"
    )


def _attempt(
    broker: OperatorBroker,
    version: str,
    client_id: str,
    on_connect: Callable[[Any], None] | None,
    on_message: Callable[[Any, Any, Any], None] | None,
    max_inflight: int | None,
) -> tuple[Any, _Outcome]:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    v5 = version == "5"
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
        reconnect_on_failure=True,
    )
    if broker.username is not None:
        client.username_pw_set(broker.username, broker.password)
    if broker.ca_file is not None:
        client.tls_set(
            ca_certs=str(broker.ca_file),
            certfile=str(broker.cert_file) if broker.cert_file else None,
            keyfile=str(broker.key_file) if broker.key_file else None,
        )
    client.reconnect_delay_set(0.2, 2)  # type: ignore[arg-type]
    if max_inflight is not None:
        client.max_inflight_messages_set(max_inflight)
    outcome = _Outcome()

    def give_up_on_5(c: Any) -> None:
        # A broker that will not speak MQTT 5 says so at once (NATS refuses, RabbitMQ hangs
        # up): stop paho retrying it and let the caller fall back. A 3.1.1 failure is retried
        # until the timeout: a cluster electing a new JetStream leader refuses for a few s.
        if v5:
            c.disconnect()
            outcome.done.set()

    def connected(c: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            outcome.reason = f"refused: {reason}"
            give_up_on_5(c)
            return
        outcome.ok = True
        if on_connect is not None:
            on_connect(c)
        outcome.done.set()

    def disconnected(c: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if not outcome.ok:
            if not outcome.reason.startswith("refused"):
                outcome.reason = f"closed before CONNACK: {reason}"
            give_up_on_5(c)

    client.on_connect = connected
    client.on_disconnect = disconnected
    if on_message is not None:
        client.on_message = on_message
    try:
        client.connect(broker.host, broker.port, keepalive=broker.keepalive)
    except OSError as exc:
        outcome.reason = str(exc)
        outcome.done.set()
        return client, outcome
    client.loop_start()
    return client, outcome


def parse_address(text: str) -> tuple[str, int]:
    """(host, port) of a `HOST:PORT` argument; ValueError naming the argument otherwise."""
    from agent.config.sections import split_address

    try:
        return split_address(text)
    except ValueError as exc:
        raise ValueError(f"--broker {exc}, got {text!r}") from None
