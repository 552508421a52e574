"""A config reload applied to a running agent, and the one list of what it cannot apply live."""

from __future__ import annotations

from typing import Any

from agent.config.sections import AgentConfig
from agent.engine.api import EngineControl
from agent.engine.reload import PROCESS_SECTIONS

RESTART_SECTIONS = ("device", *PROCESS_SECTIONS, "outbox", "scheduler")
"""Sections read only at process start: a change to any of them waits for a restart."""
RELOADABLE_MQTT = frozenset({"commands", "telemetry_qos", "max_payload_bytes", "home_assistant"})
"""The `mqtt` keys applied live; any other `mqtt` change waits for a restart."""


def restart_required(old: AgentConfig, new: AgentConfig) -> list[str]:
    """Sections that changed but only take effect after a restart (in declaration order)."""
    out = [name for name in RESTART_SECTIONS if getattr(old, name) != getattr(new, name)]
    if old.mqtt.model_dump(exclude=set(RELOADABLE_MQTT)) != new.mqtt.model_dump(
        exclude=set(RELOADABLE_MQTT)
    ):
        out.append("mqtt")
    return out


def in_force(old: AgentConfig, new: AgentConfig) -> AgentConfig:
    """The config that runs after `new` is applied live: `new`, except what waits for a restart.

    The device id and group, the broker connection, the state_dir... stay as the process
    started: documents built from the config in force (the retained `state`, `status`) must
    describe what is served, not what a restart will bring.
    """
    update: dict[str, Any] = {name: getattr(old, name) for name in RESTART_SECTIONS}
    update["mqtt"] = old.mqtt.model_copy(
        update={key: getattr(new.mqtt, key) for key in RELOADABLE_MQTT}
    )
    return new.model_copy(update=update)


def apply_reload(control: EngineControl, old: AgentConfig, new: AgentConfig) -> dict[str, Any]:
    """Hand `new` to the engine (an error changes nothing and is raised); the reply of a reload:
    what the engine changed, and what waits for a restart."""
    return {"changed": control.reload(new), "restart_required": restart_required(old, new)}
