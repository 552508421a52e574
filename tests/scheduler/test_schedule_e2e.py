"""End to end: the agent as `edge-agent run` builds it, a real Mosquitto, and a schedule that runs
`plugin.set` every second; the param change and the `schedule_run` event seen from outside."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agent.errors import ConfigError
from agent.plugin.registry import PluginRegistry
from agent.service.compose import build_agent
from tests.support import engine as kit


def test_a_schedule_sets_a_plugin_param_and_reports_each_run(
    shared_broker: Any, probe_factory: Any, unique_id: str, tmp_path: Path
) -> None:
    config = kit.make_config(
        [{"name": "counter", "rate_hz": 100.0}],
        device={"id": unique_id},
        mqtt={"enabled": True, "host": "127.0.0.1", "port": shared_broker.port},
        state_dir=str(tmp_path / "state"),
        service={"watchdog": False},
        schedule=[
            {
                "name": "gain",
                "every_s": 1,
                "command": "plugin.set",
                "args": {"name": "counter", "params": {"gain": 7.0}},
            }
        ],
    )
    base = f"edge/{unique_id}"
    probe = probe_factory(shared_broker)
    probe.subscribe(f"{base}/events/schedule")
    app = build_agent(config, registry=PluginRegistry(extra=kit.PLUGINS))
    app.start()
    try:
        assert app.wait_ready(10)
        event = probe.wait_payload(f"{base}/events/schedule", timeout=15)
        assert (event["plugin"], event["kind"], event["score"]) == ("schedule", "schedule_run", 1.0)
        data = event["data"]
        assert {k: data[k] for k in ("name", "command", "ok", "error")} == {
            "name": "gain",
            "command": "plugin.set",
            "ok": True,
            "error": None,
        }
        # The param changed as if a remote plugin.set had sent it: a remote one now sees it.
        reply = probe.command(base, "plugin.set", {"name": "counter", "params": {"label": "b"}})
        assert reply["ok"] and reply["result"]["params"] == {"gain": 7.0, "label": "b"}
        # Runs keep coming, numbered, in order.
        assert probe.wait_for(lambda: probe.count(f"{base}/events/schedule") >= 2, timeout=15)
        runs = [p["data"]["run"] for p in probe.payloads(f"{base}/events/schedule")]
        assert runs == sorted(runs) and runs[0] == 1
    finally:
        app.stop(timeout=3.0)


def test_the_agent_refuses_to_build_with_a_bad_schedule(tmp_path: Path) -> None:
    entry = {"name": "s", "every_s": 5, "command": "plugin.sett"}
    config = kit.make_config(
        [{"name": "counter"}],
        mqtt={"enabled": True, "port": 1},
        state_dir=str(tmp_path / "state"),
        schedule=[entry],
    )
    with pytest.raises(ConfigError) as caught:
        build_agent(config, registry=PluginRegistry(extra=kit.PLUGINS))
    assert [key for key, _, _ in caught.value.errors] == ["schedule[s].command"]
    off = config.model_copy(update={"mqtt": config.mqtt.model_copy(update={"enabled": False})})
    with pytest.raises(ConfigError, match=r"set mqtt\.enabled = true"):
        build_agent(off, registry=PluginRegistry(extra=kit.PLUGINS))
