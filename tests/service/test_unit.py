"""The shipped systemd unit matches what `service install` renders, and systemd accepts it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from agent.cli.main import main
from agent.config.sections import AgentConfig, PluginConfig
from agent.service.unit import render_unit

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "firmware-configs" / "systemd" / "edge-agent.service"


def test_shipped_unit_is_the_rendered_default() -> None:
    assert UNIT.read_text() == render_unit()


def test_required_directives_present() -> None:
    text = UNIT.read_text()
    for directive in (
        "Type=notify",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "WatchdogSec=",
        "Restart=on-failure",
        "DynamicUser=yes",
        "StateDirectory=edge-agent",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "LoadCredential=mqtt-password:",
    ):
        assert directive in text


def test_cap_sys_nice_only_with_realtime_priority() -> None:
    plain = AgentConfig(plugins=[PluginConfig(name="robot")])
    rt = AgentConfig(plugins=[PluginConfig(name="robot", realtime_priority=50)])
    assert "CapabilityBoundingSet=\n" in render_unit(plain)
    assert "CapabilityBoundingSet=CAP_SYS_NICE\n" in render_unit(rt)


def test_systemd_analyze_verify_passes(tmp_path: Path) -> None:
    exe = tmp_path / "edge-agent"
    exe.write_text(f"#!{sys.executable}\n")
    exe.chmod(0o755)
    unit = tmp_path / "edge-agent.service"
    unit.write_text(render_unit(exec_path=str(exe), config_path=tmp_path / "agent.toml"))
    proc = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    problems = [
        line
        for line in (proc.stdout + proc.stderr).splitlines()
        if "edge-agent.service" in line and "network-online" not in line
    ]
    assert proc.returncode == 0 and not problems, proc.stdout + proc.stderr


def test_install_dry_run_prints_unit(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["service", "install", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "[Service]" in out and "Type=notify" in out


def test_install_writes_unit(tmp_path: Path) -> None:
    assert main(["service", "install", "--unit-dir", str(tmp_path / "units")]) == 0
    assert "Type=notify" in (tmp_path / "units" / "edge-agent.service").read_text()
