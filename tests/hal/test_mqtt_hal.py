"""The `mqtt` HAL backend against a real Mosquitto: the shared HAL contract, payload formats,
staleness and actuator publishing."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agent.config.sections import AgentConfig
from agent.errors import HalError
from agent.hal.base import ActuatorSpec, SensorSpec
from agent.hal.mqtt import MqttActuator, MqttHal, extract_field, to_numbers
from tests.hal import test_contract as contract

WINDOW = 16


def hal_config(port: int, devices: dict[str, dict[str, Any]], tmp: Path) -> AgentConfig:
    return AgentConfig.model_validate(
        {
            "device": {"id": f"hal-{uuid.uuid4().hex[:8]}"},
            "mqtt": {"port": port, "reconnect_min_s": 0.05, "reconnect_max_s": 0.5},
            "hal": {"backend": "mqtt", "devices": devices},
            "state_dir": str(tmp),
        }
    )


class MqttHarness:
    """The mqtt backend with its own connection; the outside world is a test MQTT client.

    For tests.support.hal.HARNESSES: `"mqtt": lambda request: MqttHarness(
        request.getfixturevalue("shared_broker"), request.getfixturevalue("probe_class"))`.
    """

    plugin = "p"
    sensor = "signal"
    sensor_spec = SensorSpec((WINDOW,))
    actuator = "label"
    actuator_spec = ActuatorSpec((1,))

    def __init__(self, broker: Any, probe_class: Any, tmp: Path | None = None) -> None:
        uid = uuid.uuid4().hex[:8]
        self.sensor_topic = f"z2m/{uid}/signal"
        self.actuator_topic = f"z2m/{uid}/label/set"
        cfg = hal_config(
            broker.port,
            {
                "p.signal": {
                    "backend": "mqtt",
                    "topic": self.sensor_topic,
                    "field": "window.values",
                    "stale_after_s": 0.4,
                },
                "p.label": {"backend": "mqtt", "topic": self.actuator_topic, "field": "state"},
            },
            tmp or Path("/tmp"),
        )
        self.backend = MqttHal(cfg)
        self.probe = probe_class(broker.host, broker.port)
        self.probe.subscribe(self.actuator_topic)

    def inject(self, value: np.ndarray | None) -> None:
        """Publish the reading as a retained zigbee2mqtt-style JSON document (so a backend that
        subscribes a moment later still gets it); None: clear it and go silent."""
        if value is None:
            self.probe.publish(self.sensor_topic, b"", retain=True)
            return
        body = {"window": {"values": value.tolist()}, "linkquality": 80}
        self.probe.publish(self.sensor_topic, json.dumps(body), retain=True)

    def observed(self) -> np.ndarray | None:
        """The last actuator command received on its topic."""
        got = self.probe.payloads(self.actuator_topic)
        return np.asarray([got[-1]["state"]], np.float32) if got else None

    def close(self) -> None:
        self.backend.stop()
        self.probe.publish(self.sensor_topic, b"", retain=True)
        self.probe.close()


@pytest.fixture
def harness(shared_broker: Any, probe_class: Any, tmp_path: Path) -> Iterator[MqttHarness]:
    made = MqttHarness(shared_broker, probe_class, tmp_path)
    yield made
    made.close()


CONTRACT = [getattr(contract, n) for n in dir(contract) if n.startswith("test_")]


@pytest.mark.parametrize("check", CONTRACT, ids=[c.__name__[5:] for c in CONTRACT])
def test_the_mqtt_backend_meets_the_hal_contract(
    check: Callable[[Any], None], harness: MqttHarness
) -> None:
    check(harness)


# -- formats ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "path", "want"),
    [
        (b'{"temperature": 21.5, "humidity": 40}', "temperature", 21.5),  # zigbee2mqtt
        (b'{"ENERGY": {"Power": 12, "Voltage": 230}}', "ENERGY.Power", 12),  # Tasmota SENSOR
        (b'{"values": [1, 2, 3]}', "values.1", 2),
        (b"ON", None, "ON"),  # Tasmota POWER
        (b" 23.25 ", None, 23.25),
        (b'{"a": {"b": [0, {"c": true}]}}', "a.b.1.c", True),
    ],
)
def test_extract_field(payload: bytes, path: str | None, want: Any) -> None:
    assert extract_field(payload, path) == want


def test_extract_field_names_what_is_missing() -> None:
    with pytest.raises(ValueError, match="'Power'"):
        extract_field(b'{"ENERGY": {}}', "ENERGY.Power")
    with pytest.raises(ValueError, match="'5'"):
        extract_field(b'{"v": [1]}', "v.5")


def test_to_numbers() -> None:
    assert to_numbers("ON", (1,)).tolist() == [1.0]
    assert to_numbers("off", (1,)).tolist() == [0.0]
    assert to_numbers(True, (1,)).tolist() == [1.0]
    assert to_numbers([[1, 2], [3, 4]], (4,)).tolist() == [1, 2, 3, 4]
    assert to_numbers(5, (1, 1)).shape == (1, 1)
    with pytest.raises(ValueError, match="got 2 value"):
        to_numbers([1, 2], (3,))
    with pytest.raises(ValueError):
        to_numbers("warm", (1,))


# -- behaviour -------------------------------------------------------------------------------------


def test_tasmota_sensor_bad_payloads_and_staleness(
    shared_broker: Any, probe_factory: Any, tmp_path: Path, until: Any
) -> None:
    topic = f"tele/{uuid.uuid4().hex[:6]}/SENSOR"
    cfg = hal_config(
        shared_broker.port,
        {
            "energy.power": {
                "backend": "mqtt",
                "topic": topic,
                "field": "ENERGY.Power",
                "stale_after_s": 0.5,
            }
        },
        tmp_path,
    )
    hal = MqttHal(cfg)
    sensor = hal.sensor("energy", "power", SensorSpec((1,)))
    hal.start()
    try:
        probe = probe_factory(shared_broker)
        out = np.zeros(1, np.float32)
        assert not sensor.read_into(out)  # nothing received yet
        # A publish before the HAL's own SUBSCRIBE reached the broker would be lost: repeat it
        # until the sensor has it.
        assert until(lambda: hal.own_link_connected)
        first = b'{"Time": "2024-01-01T00:00:00", "ENERGY": {"Power": 1234}}'
        assert probe.publish_until(topic, first, lambda: sensor.read_into(out))
        assert out[0] == 1234.0
        probe.publish(topic, b'{"ENERGY": {"Voltage": 230}}')  # no Power: ignored, counted
        probe.publish(topic, b"garbage{")
        assert until(lambda: hal.status()["energy.power"]["bad_payloads"] == 2)
        assert sensor.read_into(out) and out[0] == 1234.0  # the last good value stays
        assert until(lambda: hal.stale() == ["energy.power"], 5)
        assert not sensor.read_into(out)
        assert hal.status()["energy.power"]["stale"] is True
        probe.publish(topic, b'{"ENERGY": {"Power": 99}}')
        assert until(lambda: sensor.read_into(out) and out[0] == 99.0)
        assert hal.stale() == []
    finally:
        hal.stop()


def test_actuator_publishes_changes_not_repeats(
    shared_broker: Any, probe_factory: Any, tmp_path: Path, until: Any
) -> None:
    topic = f"cmnd/{uuid.uuid4().hex[:6]}/valve"
    cfg = hal_config(
        shared_broker.port,
        {"home.valve": {"backend": "mqtt", "topic": topic, "field": "position"}},
        tmp_path,
    )
    probe = probe_factory(shared_broker)
    probe.subscribe(topic)
    hal = MqttHal(cfg)
    valve = hal.actuator("home", "valve", ActuatorSpec((1,)))
    assert isinstance(valve, MqttActuator)
    hal.start()
    try:
        value = np.zeros(1, np.float32)
        for v in (0.25, 0.25, 0.25, 0.75):
            value[0] = v
            valve.write(value)
            assert until(lambda: not valve.pending)  # the watcher took this value
        assert probe.wait_for(lambda: probe.count(topic) >= 2)
        assert [p["position"] for p in probe.payloads(topic)] == [0.25, 0.75]
    finally:
        hal.stop()


def test_a_device_without_a_topic_is_a_hal_error(tmp_path: Path) -> None:
    # hal.backend is "mqtt" for every device; p.x and p.y have no hal.devices entry.
    hal = MqttHal(hal_config(1883, {}, tmp_path))
    with pytest.raises(HalError, match=r"hal.devices\['p.x'\].topic is required"):
        hal.sensor("p", "x", SensorSpec((1,)))
    with pytest.raises(HalError, match=r"p\.y"):
        hal.actuator("p", "y", ActuatorSpec((1,)))
