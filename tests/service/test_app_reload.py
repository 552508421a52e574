"""A reload applied to the composed agent: one answer whether or not MQTT sync runs."""

from __future__ import annotations

from pathlib import Path

from agent.plugin.registry import PluginRegistry
from agent.service.compose import build_agent
from tests.support import engine as kit


def test_without_sync_a_reload_still_names_what_waits_for_a_restart(tmp_path: Path) -> None:
    config = kit.make_config(
        [{"name": "counter", "rate_hz": 100.0}], state_dir=str(tmp_path / "state")
    )
    app = build_agent(config, registry=PluginRegistry(extra=kit.PLUGINS))
    assert app.sync is None and app.commands is None
    assert not app.submit_command("ping", b'{"id": 1}', lambda reply: None)
    app.start()
    try:
        assert app.wait_ready(10)
        new = config.model_copy(
            update={
                "plugins": [config.plugins[0].model_copy(update={"rate_hz": 50.0})],
                "scheduler": config.scheduler.model_copy(update={"metrics_s": 5.0}),
                "state_dir": tmp_path / "elsewhere",
            }
        )
        result = app.apply_config(new)
        assert result["restart_required"] == ["state_dir", "scheduler"]
        assert result["changed"]["changed"] == {"counter": ["rate_hz"]}
        assert app.host.plugins()[0]["rate_hz"] == 50.0
    finally:
        app.stop(timeout=2.0)
