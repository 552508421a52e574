"""The mqtt HAL backend sharing the sync service's connection (no second client)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from agent.hal.base import ActuatorSpec, SensorSpec
from agent.hal.mqtt import MqttHal


def test_mqtt_hal_over_the_sync_transport(
    shared_broker: Any,
    make_config: Any,
    start_service: Any,
    probe_factory: Any,
    until: Any,
    tmp_path: Path,
) -> None:
    dev = tmp_path.name[-8:]
    cfg = make_config(
        shared_broker,
        hal={
            "devices": {
                "arm.joints": {"backend": "mqtt", "topic": f"robot/{dev}/joints", "field": "q"},
                "arm.torque": {"backend": "mqtt", "topic": f"robot/{dev}/torque/set"},
            }
        },
    )
    hal = MqttHal(cfg)
    joints = hal.sensor("arm", "joints", SensorSpec((3,)))
    torque = hal.actuator("arm", "torque", ActuatorSpec((2,)))
    service, _ = start_service(cfg)
    hal.use_transport(service)
    hal.start()
    try:
        probe = probe_factory(shared_broker)
        probe.subscribe(f"robot/{dev}/torque/set")
        assert until(lambda: service.link.connected)
        out = np.zeros(3, np.float32)
        assert until(
            lambda: (
                probe.publish(f"robot/{dev}/joints", b'{"q": [0.1, 0.2, 0.3]}')
                or joints.read_into(out)
            ),
            10,
        )
        assert np.allclose(out, [0.1, 0.2, 0.3])
        torque.write(np.asarray([1.5, -2.0], np.float32))
        assert probe.wait_payload(f"robot/{dev}/torque/set") == [1.5, -2.0]
        assert service.link.connects == 1  # one connection for sync and HAL
    finally:
        hal.stop()
