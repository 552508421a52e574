"""Reloads of the composed agent over a real Mosquitto (issue 13, defects 7 and 10).

A reload with `rate_hz = 1e-300` used to answer `internal` after the host had saved the new
config (the next reload then reported nothing changed); a reload that changed the device id
made the retained `state` describe the new id while the old one was still served.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agent.config import load_config
from agent.plugin.registry import PluginRegistry
from agent.service.compose import build_agent
from tests.support import engine as kit


def write(path: Path, port: int, device: str, state: Path, *, rate: str, group: str) -> None:
    path.write_text(
        f'state_dir = "{state}"\nmodels_dir = "{kit.MODELS}"\n'
        f'[device]\nid = "{device}"\ngroup = "{group}"\n'
        f"[mqtt]\nport = {port}\n[service]\nwatchdog = false\n"
        f'[[plugins]]\nname = "counter"\nrate_hz = {rate}\n'
    )


def test_reloads_apply_whole_or_not_at_all_and_state_describes_what_is_served(
    shared_broker: Any, probe_factory: Any, unique_id: str, tmp_path: Path
) -> None:
    cfg_file = tmp_path / "agent.toml"
    state = tmp_path / "state"
    write(cfg_file, shared_broker.port, unique_id, state, rate="100.0", group="lab")
    app = build_agent(
        load_config(cfg_file), config_path=cfg_file, registry=PluginRegistry(extra=kit.PLUGINS)
    )
    base = f"edge/{unique_id}"
    probe = probe_factory(shared_broker)
    probe.subscribe(f"{base}/state")
    probe.subscribe(f"{base}/status")
    app.start()
    try:
        assert app.wait_ready(10)
        probe.wait_payload(f"{base}/status", lambda p: p["state"] == "online")

        write(cfg_file, shared_broker.port, unique_id, state, rate="1e-300", group="lab")
        reply = probe.command(base, "config.reload")
        assert reply["error"]["code"] == "invalid_config", reply
        assert "plugins[counter].rate_hz" in reply["error"]["message"]
        assert app.host.plugins()[0]["rate_hz"] == 100.0

        write(cfg_file, shared_broker.port, unique_id, state, rate="50.0", group="lab")
        reply = probe.command(base, "config.reload")
        assert reply["result"]["changed"]["changed"] == {"counter": ["rate_hz"]}, reply

        before = probe.count(f"{base}/state")
        write(cfg_file, shared_broker.port, f"{unique_id}-new", state, rate="50.0", group="g2")
        reply = probe.command(base, "config.reload")
        assert reply["result"]["restart_required"] == ["device"], reply
        assert probe.wait_for(lambda: probe.count(f"{base}/state") > before)
        doc = probe.payloads(f"{base}/state")[-1]
        assert (doc["device"], doc["group"]) == (unique_id, "lab")
        assert app.sync is not None and app.sync.config.device.id == unique_id
        # Still restart-pending at the next reload: nothing is silently dropped.
        assert probe.command(base, "config.reload")["result"]["restart_required"] == ["device"]
    finally:
        app.stop(timeout=2.0)
