"""Hardware abstraction: sensors and actuators behind one seam (base.py), each device from the
backend its config names (router.py): the simulator (sim.py, simulator.py) or MQTT (mqtt.py).

Importing the package imports none of its modules: each name is handed on from its module on
first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agent.hal.base import Actuator, ActuatorSpec, HalBackend, Sensor, SensorSpec
    from agent.hal.router import Hal

_HOME = {
    "Actuator": "base",
    "ActuatorSpec": "base",
    "HalBackend": "base",
    "Sensor": "base",
    "SensorSpec": "base",
    "Hal": "router",
}

__all__ = ["Actuator", "ActuatorSpec", "Hal", "HalBackend", "Sensor", "SensorSpec"]


def __getattr__(name: str) -> Any:
    """Import the module that defines `name` on first use."""
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
