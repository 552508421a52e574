"""End to end: the real AgentApp (plugin host, loops, sim HAL, real model) with the sync service
attached, driven over a real Mosquitto."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from agent.plugin.registry import PluginRegistry
from agent.service.app import AgentApp
from agent.sync.service import SyncService
from tests.support import engine as kit


@pytest.fixture
def app(shared_broker: Any, make_config: Any) -> Iterator[tuple[AgentApp, SyncService]]:
    cfg = make_config(
        shared_broker,
        models_dir=kit.MODELS,
        plugins=[
            {"name": "wave", "rate_hz": 200.0, "params": {"telemetry_every": 10}},
            {"name": "counter", "rate_hz": 100.0},
        ],
    )
    application = AgentApp(cfg, registry=PluginRegistry(extra=kit.PLUGINS))
    sync = SyncService(cfg, application.host)
    application.attach(sync)
    application.start()
    assert application.wait_ready(10)
    yield application, sync
    application.stop(timeout=3.0)


def test_the_running_agent_over_mqtt(
    app: tuple[AgentApp, SyncService], shared_broker: Any, probe_factory: Any
) -> None:
    application, sync = app
    device = sync.config.device.id
    base = f"edge/{device}"
    probe = probe_factory(shared_broker)
    probe.subscribe(f"{base}/#")
    probe.wait_payload(f"{base}/status", lambda p: p["state"] == "online")
    state = probe.wait_payload(f"{base}/state", lambda p: "wave" in p["models"])
    assert state["models"]["wave"]["name"] == kit.WAVE_MODEL
    assert {p["name"]: p["state"] for p in state["plugins"]} == {
        "wave": "running",
        "counter": "running",
    }

    batch = probe.wait_payload(f"{base}/telemetry/wave")
    assert batch["fields"] == ["label", "score"] and batch["rows"]

    plugins = probe.command(base, "plugins.list")["result"]
    assert {p["name"] for p in plugins} == {"wave", "counter"}
    stats = probe.command(base, "stats", {"plugin": "wave"})["result"]["wave"]
    assert stats["ticks"] > 0 and "p99" in stats["tick_us"]

    reply = probe.command(base, "plugin.set", {"name": "wave", "params": {"telemetry_every": 5}})
    assert reply["ok"] and reply["result"]["params"]["telemetry_every"] == 5
    reply = probe.command(base, "plugin.set", {"name": "wave", "params": {"telemetry_every": 0}})
    assert not reply["ok"] and reply["error"]["code"] == "invalid_config"
    assert "plugins[wave].params.telemetry_every" in reply["error"]["message"]

    assert probe.command(base, "plugin.stop", {"name": "counter"})["result"]["state"] == "stopped"
    assert probe.command(base, "plugin.start", {"name": "counter"})["ok"]
    assert probe.command(base, "plugin.restart", {"name": "counter"})["ok"]
    unknown = probe.command(base, "plugin.stop", {"name": "nope"})
    assert unknown["error"]["code"] == "not_found"

    models = {m["name"]: m for m in probe.command(base, "models.list")["result"]}
    assert "wave" in models[kit.WAVE_MODEL]["used_by"]

    sensors = f"homeassistant/sensor/{device}/+/config"
    probe.subscribe(sensors)  # retained: delivered on subscription
    assert probe.wait_for(lambda: probe.count(sensors) >= 2)
    assert {p["value_template"] for p in probe.payloads(sensors)} == {
        "{{ value_json.last['label'] }}",
        "{{ value_json.last['score'] }}",
    }
    metrics = probe.wait_payload(f"{base}/metrics")
    assert metrics["plugins"]["wave"]["ticks"] > 0

    application.stop(timeout=3.0)
    probe.wait_payload(f"{base}/status", lambda p: p["state"] == "offline")
