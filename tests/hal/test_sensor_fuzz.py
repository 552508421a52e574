"""Fuzzed sensor payloads through the MQTT HAL's parser (issue 13, defect 5): never an exception
on the network thread, and a fresh reading is always finite and within the sensor's range."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.config.sections import MqttDeviceConfig
from agent.hal.base import SensorSpec
from agent.hal.mqtt import MqttSensor
from agent.transport.base import InboundMessage

SPEC = SensorSpec((2,), "W", low=-1e6, high=1e6)
numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.sampled_from(["ON", "off", "21.5", "1e39", "nan", "-inf", "warm", ""]),
    st.booleans(),
    st.none(),
)
values = st.one_of(
    numbers,
    st.lists(numbers, max_size=4),
    st.dictionaries(st.text(max_size=3), numbers, max_size=2),
)


def encode(value: Any) -> bytes:
    # json.dumps writes NaN/Infinity and huge ints: exactly what a broken device might send.
    return json.dumps({"ENERGY": {"Power": value}}).encode()


@settings(max_examples=400, deadline=None)
@given(payloads=st.lists(st.one_of(values.map(encode), st.binary(max_size=40)), max_size=6))
def test_no_payload_raises_and_fresh_readings_are_plausible(payloads: list[bytes]) -> None:
    cfg = MqttDeviceConfig(backend="mqtt", topic="tele/x/SENSOR", field="ENERGY.Power")
    sensor = MqttSensor("energy.mains", SPEC, cfg)
    out = np.zeros(2, np.float32)
    for payload in payloads:
        sensor.on_message(InboundMessage("tele/x/SENSOR", payload))
        if sensor.read_into(out):
            assert np.isfinite(out).all() and (np.abs(out) <= 1e6).all(), out
        else:
            assert sensor.bad_payloads or not sensor.updates
    assert sensor.updates + sensor.bad_payloads == len(payloads)
    if sensor.bad_payloads:
        assert sensor.last_error  # every refusal has a reason
