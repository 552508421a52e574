"""Operator-side MQTT for the fleet simulator and the tests, and the private Mosquitto they run.

The Mosquitto launcher lives in agent/bench/broker.py (bench starts one too, and agent/ must not
import sim/); it is handed on here so tools and tests keep one import.
"""

from __future__ import annotations

import uuid
from typing import Any

from agent.bench.broker import MOSQUITTO_CANDIDATES, Broker, free_port, mosquitto_path

__all__ = ["MOSQUITTO_CANDIDATES", "Broker", "free_port", "mosquitto_path", "operator_client"]


def operator_client(name: str, *, protocol: str = "5") -> Any:
    """A paho client (MQTT 5, or `protocol="3.1.1"` for NATS and RabbitMQ) with a unique id
    starting with `name`, for operator-side tools (fleet observer, soak ledger); the caller sets
    callbacks, connects and starts its loop. `agent.transport.operator.connect_operator` also
    connects, and falls back to 3.1.1 by itself."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    return mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"{name}-{uuid.uuid4().hex[:8]}",
        protocol=mqtt.MQTTv5 if protocol == "5" else mqtt.MQTTv311,
    )
