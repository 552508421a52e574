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
        'ExecReload=/bin/sh -c "kill -HUP ${MAINPID}"',
        "WatchdogSec=",
        "Restart=on-failure",
        "DynamicUser=yes",
        "StateDirectory=edge-agent",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
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


def test_credentials_only_when_named() -> None:
    # The shipped unit serves no config in particular: it loads no credential.
    assert "LoadCredential=" not in UNIT.read_text()
    unit = render_unit(credentials=[("mqtt-password", Path("/etc/edge-agent/credentials/pw"))])
    assert "LoadCredential=mqtt-password:/etc/edge-agent/credentials/pw\n" in unit


def test_documentation_points_at_installed_docs() -> None:
    unit = render_unit(exec_path="/opt/edge-agent/bin/edge-agent")
    line = next(x for x in unit.splitlines() if x.startswith("Documentation="))
    assert line.split("=", 1)[1].split() == [
        "file:/opt/edge-agent/share/doc/edge-agent/deploy.md",
        "file:/opt/edge-agent/share/doc/edge-agent/mqtt.md",
    ]


def test_install_dry_run_prints_unit(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    argv = ["service", "install", "--board", "generic-x86", "--prefix", str(tmp_path), "--dry-run"]
    code = main(argv)
    out = capsys.readouterr()
    # Where this interpreter lives decides between reuse, a new venv and a refusal (exit 2).
    assert (code == 0 and "Type=notify" in out.out) or (code == 2 and "hidden" in out.err), out
    assert not any(tmp_path.iterdir())  # a dry run writes nothing
