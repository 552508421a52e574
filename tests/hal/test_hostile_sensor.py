"""One infinite sensor reading must not poison a plugin (issue 13, defect 5): the MQTT HAL turns
non-finite and out-of-range readings into a dropout, against a real Mosquitto."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from agent.hal.base import SensorSpec
from agent.hal.mqtt import MqttHal
from tests.hal.test_mqtt_hal import hal_config


def test_an_infinite_or_out_of_range_reading_is_a_dropout(
    shared_broker: Any, probe_factory: Any, tmp_path: Path, until: Any
) -> None:
    topic = f"tele/{uuid.uuid4().hex[:6]}/SENSOR"
    device = {"backend": "mqtt", "topic": topic, "field": "ENERGY.Power"}
    hal = MqttHal(hal_config(shared_broker.port, {"energy.mains": device}, tmp_path))
    sensor = hal.sensor("energy", "mains", SensorSpec((1,), "W", low=-1e6, high=1e6))
    hal.start()
    try:
        probe = probe_factory(shared_broker)
        out = np.zeros(1, np.float32)
        assert until(lambda: hal.own_link_connected)
        time.sleep(0.2)  # the HAL's SUBSCRIBE must reach the broker before the first publish
        probe.publish(topic, b'{"ENERGY": {"Power": 1200}}')
        assert until(lambda: sensor.read_into(out) and out[0] == 1200.0)
        bad = [
            b'{"ENERGY":{"Power":1e39}}',
            b'{"ENERGY":{"Power":2e6}}',
            b'{"ENERGY":{"Power":1' + b"0" * 400 + b"}}",
        ]
        for n, payload in enumerate(bad, 1):
            probe.publish(topic, payload)
            assert until(lambda n=n: hal.status()["energy.mains"]["implausible"] == n)
            assert not sensor.read_into(out)  # a dropout, not the last good value
        status = hal.status()["energy.mains"]
        assert "range" in status["last_error"] or "finite" in status["last_error"]
        probe.publish(topic, b'{"ENERGY": {"Power": 900}}')
        assert until(lambda: sensor.read_into(out) and out[0] == 900.0)
    finally:
        hal.stop()


def test_the_spec_names_why_a_reading_is_implausible() -> None:
    spec = SensorSpec((2,), low=0, high=1)
    assert spec.implausible(np.array([0.0, 1.0], np.float32)) == ""
    assert spec.implausible(np.array([np.inf, 0.0], np.float32)) == "not a finite number"
    assert spec.implausible(np.array([np.nan, 0.0], np.float32)) == "not a finite number"
    assert "outside the sensor's range [0, 1]" in spec.implausible(np.array([0.0, 2.0], np.float32))
