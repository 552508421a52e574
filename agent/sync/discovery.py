"""Home Assistant MQTT discovery: the agent's entities appear in Home Assistant unconfigured.

A plugin may describe its entities with an optional class attribute
`ha_entities: ClassVar[tuple[HaEntity, ...]]`; `()` opts out. Without it, one sensor per telemetry
field is derived. Sensors read the latest values (`last`) of the plugin's telemetry batches;
`number` and `switch` entities change a plugin parameter through the `plugin.set` command. Every
entity is available while the agent's status says online. Configs are retained and republished
whenever `homeassistant/status` says `online` (Home Assistant restarted).
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from agent import __version__
from agent.config.sections import AgentConfig
from agent.sync.payloads import to_json
from agent.transport.topics import Topics

log = logging.getLogger(__name__)

Component = Literal["sensor", "binary_sensor", "number", "switch"]


@dataclass(frozen=True, slots=True)
class HaEntity:
    """One Home Assistant entity of a plugin."""

    key: str
    """Telemetry field (sensor, binary_sensor) or params key (number, switch)."""
    component: Component = "sensor"
    name: str | None = None
    unit: str | None = None
    device_class: str | None = None
    state_class: str | None = "measurement"
    icon: str | None = None
    minimum: float | None = None
    maximum: float | None = None
    step: float | None = None


@dataclass(frozen=True, slots=True)
class PluginEntities:
    """A plugin's name, telemetry fields and declared entities (None: derive from fields)."""

    plugin: str
    fields: tuple[str, ...]
    entities: tuple[HaEntity, ...] | None = None


def declared_entities(plugin: str) -> tuple[HaEntity, ...] | None:
    """`ha_entities` of the plugin class behind entry point `plugin`, if it declares them."""
    try:
        eps = importlib.metadata.entry_points(group="edge_agent.plugins", name=plugin)
        for ep in eps:
            value = getattr(ep.load(), "ha_entities", None)
            if value is not None:
                return tuple(value)
    except Exception as exc:  # a broken plugin package must not stop discovery of the rest
        log.debug("no ha_entities for %s: %s", plugin, exc)
    return None


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9_]+", "_", text.lower()).strip("_") or "x"


def _device(config: AgentConfig) -> dict[str, Any]:
    dev = config.device
    return {
        "identifiers": [f"edge_agent_{dev.id}"],
        "name": dev.name or dev.id,
        "model": dev.board,
        "manufacturer": "edge-agent",
        "sw_version": __version__,
    }


def _availability(topics: Topics) -> dict[str, Any]:
    return {
        "availability_topic": topics.status,
        "availability_template": "{{ value_json.state }}",
        "payload_available": "online",
        "payload_not_available": "offline",
    }


def entity_config(
    topics: Topics, config: AgentConfig, plugin: str, entity: HaEntity
) -> tuple[str, dict[str, Any]]:
    """(config topic, discovery payload) of one plugin entity."""
    object_id = _slug(f"{plugin}_{entity.key}")
    payload: dict[str, Any] = {
        "name": entity.name or f"{plugin} {entity.key.replace('_', ' ')}",
        "unique_id": f"{config.device.id}_{object_id}",
        "object_id": f"{_slug(config.device.id)}_{object_id}",
        "device": _device(config),
        **_availability(topics),
    }
    if entity.component in ("sensor", "binary_sensor"):
        payload["state_topic"] = topics.telemetry(plugin)
        payload["value_template"] = f"{{{{ value_json.last['{entity.key}'] }}}}"
        if entity.component == "binary_sensor":
            payload["value_template"] = (
                f"{{{{ 'ON' if (value_json.last['{entity.key}'] | float(0)) > 0.5 else 'OFF' }}}}"
            )
    else:
        payload["command_topic"] = f"{topics.base}/cmd/plugin.set"
        value = "{{ value }}" if entity.component == "number" else "{{ (value == 'ON') | tojson }}"
        request = {"id": f"ha-{object_id}", "args": {"name": plugin, "params": {entity.key: "@"}}}
        payload["command_template"] = json.dumps(request).replace('"@"', value)
        payload["optimistic"] = True
    optional = {
        "unit_of_measurement": entity.unit,
        "device_class": entity.device_class,
        "state_class": entity.state_class if entity.component == "sensor" else None,
        "icon": entity.icon,
        "min": entity.minimum,
        "max": entity.maximum,
        "step": entity.step,
    }
    payload.update({k: v for k, v in optional.items() if v is not None})
    return topics.discovery(entity.component, object_id), payload


def agent_config(topics: Topics, config: AgentConfig) -> tuple[str, dict[str, Any]]:
    """The agent's own connectivity entity (binary_sensor from the status topic)."""
    payload = {
        "name": "agent online",
        "unique_id": f"{config.device.id}_agent_online",
        "object_id": f"{_slug(config.device.id)}_agent_online",
        "device_class": "connectivity",
        "state_topic": topics.status,
        "value_template": "{{ 'ON' if value_json.state == 'online' else 'OFF' }}",
        "device": _device(config),
    }
    return topics.discovery("binary_sensor", "agent_online"), payload


def discovery_messages(
    topics: Topics, config: AgentConfig, plugins: Sequence[PluginEntities]
) -> list[tuple[str, bytes]]:
    """Every discovery config message (retained) for the agent and its plugins."""
    out = [agent_config(topics, config)]
    for p in plugins:
        entities = p.entities
        if entities is None:
            entities = tuple(HaEntity(key=f) for f in p.fields)
        for entity in entities:
            out.append(entity_config(topics, config, p.plugin, entity))
    return [(topic, to_json(payload)) for topic, payload in out]
