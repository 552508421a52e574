"""The plugin SDK: the one import a plugin author needs (`from agent.plugin import Plugin, ...`).

Names are imported from their home modules on first use, so `import agent.plugin.channel` (as the
core does) loads nothing else.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agent.errors import HalError, ModelError, PluginError
    from agent.events import Event
    from agent.hal.base import Actuator, ActuatorSpec, Sensor, SensorSpec
    from agent.plugin.base import Plugin, PluginContext, PluginParams
    from agent.plugin.channel import OutputChannel
    from agent.runtime.base import Model
    from agent.runtime.slot import ModelSlot

_HOME = {
    "HalError": "agent.errors",
    "ModelError": "agent.errors",
    "PluginError": "agent.errors",
    "Event": "agent.events",
    "Actuator": "agent.hal.base",
    "ActuatorSpec": "agent.hal.base",
    "Sensor": "agent.hal.base",
    "SensorSpec": "agent.hal.base",
    "Plugin": "agent.plugin.base",
    "PluginContext": "agent.plugin.base",
    "PluginParams": "agent.plugin.base",
    "OutputChannel": "agent.plugin.channel",
    "Model": "agent.runtime.base",
    "ModelSlot": "agent.runtime.slot",
}

__all__ = [
    "Actuator",
    "ActuatorSpec",
    "Event",
    "HalError",
    "Model",
    "ModelError",
    "ModelSlot",
    "OutputChannel",
    "Plugin",
    "PluginContext",
    "PluginError",
    "PluginParams",
    "Sensor",
    "SensorSpec",
]


def __getattr__(name: str) -> Any:
    """Import the module that defines `name` on first use."""
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
