"""Home Assistant MQTT discovery: config topics and payloads, republished on HA's birth message."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from agent.sync.discovery import (
    HaEntity,
    PluginEntities,
    declared_entities,
    discovery_messages,
    entity_config,
)
from agent.transport.topics import Topics
from tests.support.sync import agent_config


def test_discovery_configs_are_retained_and_republished_when_ha_comes_online(
    shared_broker: Any, make_config: Any, start_service: Any, probe_factory: Any
) -> None:
    cfg = make_config(shared_broker, device={"name": "Kitchen board"})
    device = cfg.device.id
    probe = probe_factory(shared_broker)
    probe.subscribe(f"homeassistant/+/{device}/+/config")
    svc, _ = start_service(cfg)
    svc.discovery.window_s, svc.discovery.jitter_s = 0.3, 0.1  # the test's time is short
    flt = f"homeassistant/+/{device}/+/config"
    assert probe.wait_for(lambda: probe.count(flt) >= 3)
    configs = {t: json.loads(p) for t, p, _, _ in probe.messages}
    temp = configs[f"homeassistant/sensor/{device}/gen_temperature/config"]
    assert temp["state_topic"] == f"edge/{device}/telemetry/gen"
    assert temp["value_template"] == "{{ value_json.last['temperature'] }}"
    assert temp["unique_id"] == f"{device}_gen_temperature"
    assert temp["availability_topic"] == f"edge/{device}/status"
    assert temp["availability_template"] == "{{ value_json.state }}"
    assert temp["device"]["identifiers"] == [f"edge_agent_{device}"]
    assert temp["device"]["name"] == "Kitchen board"
    online = configs[f"homeassistant/binary_sensor/{device}/agent_online/config"]
    assert online["device_class"] == "connectivity"
    assert f"homeassistant/sensor/{device}/gen_power/config" in configs
    # Retained: a client that subscribes later (Home Assistant starting) gets them at once.
    late = probe_factory(shared_broker)
    late.subscribe(flt)
    assert late.wait_for(lambda: late.count(flt) >= 3)
    assert all(retained for _, _, retained, _ in late.messages)
    # Home Assistant's birth message makes the agent publish them again.
    before = probe.count(flt)
    probe.publish("homeassistant/status", b"online")
    assert probe.wait_for(lambda: probe.count(flt) >= before + 3)


def test_no_discovery_when_disabled(
    shared_broker: Any, make_config: Any, start_service: Any, probe_factory: Any
) -> None:
    cfg = make_config(shared_broker, mqtt={"home_assistant": False})
    probe = probe_factory(shared_broker)
    probe.subscribe(f"edge/{cfg.device.id}/status")
    probe.subscribe(f"homeassistant/+/{cfg.device.id}/+/config")
    start_service(cfg)
    probe.wait_payload(f"edge/{cfg.device.id}/status")
    probe.publish("homeassistant/status", b"online")
    probe.publish(f"edge/{cfg.device.id}/cmd/ping", b'{"id": 1}')  # a round trip as a fence
    assert probe.wait_for(lambda: probe.count(f"edge/{cfg.device.id}/status") >= 1)
    assert probe.count(f"homeassistant/+/{cfg.device.id}/+/config") == 0


def _render(template: str, value: str) -> Any:
    """What Home Assistant sends: the template with its one expression substituted."""
    start = template.index("{{")
    end = template.index("}}") + 2
    return json.loads(template[:start] + value + template[end:])


def test_declared_number_and_switch_entities_drive_plugin_set() -> None:
    topics = Topics("edge", "dev-1", "lab")
    cfg = agent_config(1883, "dev-1", Path("/tmp/unused"))
    topic, number = entity_config(
        topics,
        cfg,
        "smart_home",
        HaEntity("setpoint", "number", unit="°C", minimum=15, maximum=28, step=0.5),
    )
    assert topic == "homeassistant/number/dev-1/smart_home_setpoint/config"
    assert number["command_topic"] == "edge/dev-1/cmd/plugin.set"
    assert (number["min"], number["max"], number["step"]) == (15, 28, 0.5)
    assert number["unit_of_measurement"] == "°C"
    assert _render(number["command_template"], "21.5") == {
        "id": "ha-smart_home_setpoint",
        "args": {"name": "smart_home", "params": {"setpoint": 21.5}},
    }
    _, switch = entity_config(topics, cfg, "smart_home", HaEntity("eco", "switch"))
    assert _render(switch["command_template"], "true")["args"]["params"] == {"eco": True}
    _, sensor = entity_config(
        topics, cfg, "energy", HaEntity("power", unit="W", device_class="power")
    )
    assert sensor["device_class"] == "power" and sensor["state_class"] == "measurement"


def test_declared_entities_replace_the_derived_ones() -> None:
    topics = Topics("edge", "d", "g")
    cfg = agent_config(1883, "d", Path("/tmp/unused"))
    msgs = discovery_messages(
        topics,
        cfg,
        [
            PluginEntities("a", ("x", "y")),
            PluginEntities("b", ("z",), (HaEntity("z", "binary_sensor", name="Leak"),)),
            PluginEntities("c", ("w",), ()),  # opted out
        ],
    )
    names = sorted(t for t, _ in msgs)
    assert names == [
        "homeassistant/binary_sensor/d/agent_online/config",
        "homeassistant/binary_sensor/d/b_z/config",
        "homeassistant/sensor/d/a_x/config",
        "homeassistant/sensor/d/a_y/config",
    ]
    assert declared_entities("no_such_plugin") is None


def test_a_flood_of_births_is_answered_once_per_window(
    shared_broker: Any, make_config: Any, start_service: Any, probe_factory: Any
) -> None:
    cfg = make_config(shared_broker)
    device = cfg.device.id
    flt = f"homeassistant/+/{device}/+/config"
    probe = probe_factory(shared_broker)
    probe.subscribe(flt)
    svc, _ = start_service(cfg)
    assert probe.wait_for(lambda: svc.discovery.published == 1)
    svc.discovery.window_s, svc.discovery.jitter_s = 1.0, 0.2
    for _ in range(300):  # used to be one full republish per message (45x amplification)
        probe.client.publish("homeassistant/status", b"online", qos=0)
    probe.publish("homeassistant/status", b"online")  # acknowledged: the flood went out before
    assert probe.wait_for(lambda: svc.discovery.birth_messages >= 250)
    assert probe.wait_for(lambda: svc.discovery.published == 2)  # ~300 births, one publish
    # A later birth is still answered, once, in the next window.
    probe.publish("homeassistant/status", b"online")
    assert probe.wait_for(lambda: svc.discovery.published == 3)
