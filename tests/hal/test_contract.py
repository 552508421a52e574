"""The HAL contract, run over every backend registered in tests.support.hal.HARNESSES."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from agent.errors import HalError
from agent.hal.base import ActuatorSpec, SensorSpec
from tests.support.hal import HalHarness
from tests.support.waiting import until


def _ramp(spec: SensorSpec | ActuatorSpec, start: float) -> np.ndarray:
    return (start + np.arange(int(np.prod(spec.shape)), dtype=np.float32)).reshape(spec.shape)


def test_a_sensor_reads_into_the_callers_buffer(harness: HalHarness) -> None:
    sensor = harness.backend.sensor(harness.plugin, harness.sensor, harness.sensor_spec)
    assert sensor.spec.shape == harness.sensor_spec.shape
    harness.backend.start()
    want = _ramp(harness.sensor_spec, 3.0)
    harness.inject(want)
    out = np.zeros(harness.sensor_spec.shape, np.float32)
    buffer = out
    assert until(lambda: sensor.read_into(out) and np.array_equal(out, want))
    assert out is buffer and out.dtype == np.float32


def test_a_sensor_without_a_fresh_reading_says_so(harness: HalHarness) -> None:
    sensor = harness.backend.sensor(harness.plugin, harness.sensor, harness.sensor_spec)
    harness.backend.start()
    harness.inject(_ramp(harness.sensor_spec, 1.0))
    out = np.zeros(harness.sensor_spec.shape, np.float32)
    assert until(lambda: sensor.read_into(out))
    harness.inject(None)
    assert until(lambda: not sensor.read_into(out), 10.0)


def test_an_actuator_copies_what_it_is_given(harness: HalHarness) -> None:
    actuator = harness.backend.actuator(harness.plugin, harness.actuator, harness.actuator_spec)
    assert actuator.spec.shape == harness.actuator_spec.shape
    harness.backend.start()
    value = _ramp(harness.actuator_spec, 2.0)
    sent = value.copy()
    actuator.write(value)
    value += 100.0  # the caller reuses its buffer at once
    assert until(lambda: (got := harness.observed()) is not None and np.array_equal(got, sent))


def test_an_unknown_device_is_a_hal_error(harness: HalHarness) -> None:
    with pytest.raises(HalError):
        harness.backend.sensor(harness.plugin, "no_such_sensor", harness.sensor_spec)
    with pytest.raises(HalError):
        harness.backend.actuator(harness.plugin, "no_such_actuator", harness.actuator_spec)


def test_reading_allocates_nothing(harness: HalHarness) -> None:
    sensor = harness.backend.sensor(harness.plugin, harness.sensor, harness.sensor_spec)
    harness.backend.start()
    harness.inject(_ramp(harness.sensor_spec, 0.0))
    out = np.zeros(harness.sensor_spec.shape, np.float32)
    assert until(lambda: sensor.read_into(out))
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        for _ in range(2000):
            sensor.read_into(out)
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    assert sum(s.size_diff for s in after.compare_to(before, "filename")) < 2048


def test_start_and_stop_are_idempotent(harness: HalHarness) -> None:
    harness.backend.start()
    harness.backend.start()
    harness.backend.stop()
    harness.backend.stop()
