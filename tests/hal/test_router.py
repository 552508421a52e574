"""`Hal` picks a backend per device; the sim backend binds simulators on demand and steps them in
real time."""

from __future__ import annotations

import time

import numpy as np
import pytest

from agent.config.sections import HalConfig
from agent.errors import HalError
from agent.hal.base import ActuatorSpec, SensorSpec
from agent.hal.router import Hal
from agent.hal.sim import SimHal
from tests.support import engine as kit

SIM = "tests.support.engine:WaveSim"
SENSORS = {"signal": SensorSpec((kit.WINDOW,))}
ACTUATORS = {"label": ActuatorSpec((1,))}


def test_devices_come_from_the_sim_backend_by_default() -> None:
    hal = Hal(HalConfig(sim_seed=3))
    sensors, actuators = hal.devices_for(
        "wave", simulator=SIM, sensors=SENSORS, actuators=ACTUATORS
    )
    out = np.zeros(kit.WINDOW, np.float32)
    assert sensors["signal"].read_into(out) and np.any(out != 0)
    actuators["label"].write(np.ones(1, np.float32))
    backend = hal.backend("sim")
    assert isinstance(backend, SimHal)
    sim = backend.simulator("wave")
    assert isinstance(sim, kit.WaveSim) and sim.writes == 1


def test_a_device_override_routes_to_its_backend() -> None:
    other = SimHal()
    other_sim = kit.WaveSim()
    other_sim.reset(0)
    other.bind("wave", other_sim)
    config = HalConfig.model_validate(
        {"devices": {"wave.label": {"backend": "mqtt", "topic": "zigbee2mqtt/x"}}}
    )
    hal = Hal(config, backends={"mqtt": other})
    assert hal.backend_name("wave", "label") == "mqtt"
    assert hal.backend_name("wave", "signal") == "sim"
    _, actuators = hal.devices_for("wave", simulator=SIM, sensors=SENSORS, actuators=ACTUATORS)
    actuators["label"].write(np.full(1, 2.0, np.float32))
    assert other_sim.writes == 1 and other_sim.label[0] == 2.0


def test_a_missing_backend_names_the_device() -> None:
    config = HalConfig.model_validate(
        {"devices": {"wave.signal": {"backend": "mqtt", "topic": "zigbee2mqtt/x"}}}
    )
    with pytest.raises(HalError, match=r"wave\.signal.*'mqtt'"):
        Hal(config).devices_for("wave", simulator=SIM, sensors=SENSORS, actuators={})


def test_sim_devices_need_a_simulator_with_matching_devices() -> None:
    with pytest.raises(HalError, match="declares no simulator"):
        Hal(HalConfig()).devices_for("x", simulator=None, sensors=SENSORS, actuators={})
    with pytest.raises(HalError, match="not found"):
        Hal(HalConfig()).devices_for("x", simulator="nowhere:Sim", sensors=SENSORS, actuators={})
    with pytest.raises(HalError, match="shape"):
        Hal(HalConfig()).devices_for(
            "x", simulator=SIM, sensors={"signal": SensorSpec((3,))}, actuators={}
        )
    with pytest.raises(HalError, match="no sensor 'temp'"):
        Hal(HalConfig()).devices_for(
            "x", simulator=SIM, sensors={"temp": SensorSpec((1,))}, actuators={}
        )


def test_a_plugin_without_devices_needs_no_simulator() -> None:
    hal = Hal(HalConfig())
    assert hal.devices_for("x", simulator=None, sensors={}, actuators={}) == ({}, {})
    assert hal.backend("sim") is None


def test_simulators_step_in_real_time_also_when_bound_while_running() -> None:
    hal = Hal(HalConfig(sim_speed=2.0))
    hal.start()
    try:
        hal.devices_for("a", simulator=SIM, sensors=SENSORS, actuators={})
        backend = hal.backend("sim")
        assert isinstance(backend, SimHal)
        # The scenario: simulated time is measured against these two half-second spans.
        t0 = time.perf_counter()
        time.sleep(0.5)
        hal.devices_for("b", simulator=SIM, sensors=SENSORS, actuators={})  # bound while running
        time.sleep(0.5)
        elapsed = time.perf_counter() - t0
        a, b = backend.simulator("a").t, backend.simulator("b").t
    finally:
        hal.stop()
    # sim_speed 2: simulated time runs at twice the wall clock; b joined half-way through.
    assert a == pytest.approx(2.0 * elapsed, rel=0.2)
    assert b / a == pytest.approx(0.5, rel=0.25)
    hal.release("a")
    assert not backend.is_bound("a") and backend.is_bound("b")
