"""Entry-point discovery: built-in plugins, broken ones skipped, a third-party package installed
with pip (a wheel built here) discovered and ticked by the agent with no change to the agent."""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import re
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

from agent.errors import PluginError
from agent.plugin.base import Plugin
from agent.plugin.registry import GROUP, PluginRegistry

EDGE_AGENT = str(Path(sys.executable).parent / "edge-agent")
PIP_INSTALL = (sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index")
THIRD_PARTY = textwrap.dedent(
    '''
    """A plugin shipped by someone else: it only knows the agent's public plugin seam."""
    import numpy as np
    from pydantic import Field

    from agent.plugin.base import Plugin, PluginContext, PluginParams


    class HeartbeatParams(PluginParams):
        """How many beats per tick."""

        step: int = Field(1, ge=1, description="Beats added per tick")


    class Heartbeat(Plugin):
        """Counts beats and reports them every 10 ticks."""

        Params = HeartbeatParams
        telemetry_fields = ("beats",)
        default_rate_hz = 50.0

        def setup(self, ctx: PluginContext) -> None:
            self.ctx = ctx
            self.step = ctx.params.step
            self.row = np.zeros(1)
            self.n = 0

        def tick(self, now_ns: int) -> None:
            self.n += 1
            if self.n % 10 == 0:
                self.row[0] = self.n * self.step
                self.ctx.out.telemetry(now_ns, self.row)
    '''
)


def build_wheel(dest: Path, name: str, files: dict[str, str], entry_points: str) -> Path:
    """A pure-Python wheel, laid out as any build backend would (PEP 427)."""
    dist = f"{name}-1.0.0"
    info = f"{dist}.dist-info"
    meta = {
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0.0\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n",
        f"{info}/entry_points.txt": entry_points,
    }
    wheel = dest / f"{dist}-py3-none-any.whl"
    records = []
    with zipfile.ZipFile(wheel, "w") as zf:
        for arcname, text in {**files, **meta}.items():
            data = text.encode()
            zf.writestr(arcname, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            records.append(f"{arcname},sha256={digest.decode()},{len(data)}")
        records.append(f"{info}/RECORD,,")
        zf.writestr(f"{info}/RECORD", "\n".join(records) + "\n")
    return wheel


@pytest.fixture(scope="module")
def third_party_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`pip install --target` of a separately built plugin package."""
    tmp = tmp_path_factory.mktemp("thirdparty")
    wheel = build_wheel(
        tmp,
        "edge_heartbeat",
        {"edge_heartbeat/__init__.py": THIRD_PARTY},
        f"[{GROUP}]\nheartbeat = edge_heartbeat:Heartbeat\n",
    )
    site = tmp / "site"
    subprocess.run(
        [*PIP_INSTALL, "--target", str(site), str(wheel)],
        check=True,
        timeout=120,
    )
    return site


def test_builtin_plugins_are_entry_points() -> None:
    names = PluginRegistry().names()
    assert {"smart_home", "energy", "robot"} <= set(names)


def test_a_third_party_package_is_discovered(
    third_party_site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(third_party_site))
    registry = PluginRegistry()
    assert "heartbeat" in registry.names()
    cls = registry.load("heartbeat")
    assert issubclass(cls, Plugin) and cls.default_rate_hz == 50.0


def test_the_agent_runs_a_third_party_plugin_unchanged(
    third_party_site: Path, tmp_path: Path
) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(
        f'state_dir = "{tmp_path / "state"}"\n[mqtt]\nenabled = false\n'
        '[[plugins]]\nname = "heartbeat"\nrate_hz = 50\nparams = { step = 2 }\n'
    )
    env = {**os.environ, "PYTHONPATH": str(third_party_site)}
    out = subprocess.run(
        [EDGE_AGENT, "run", "--config", str(config), "--duration", "1"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    line = re.search(r"plugin=heartbeat state=\w+ rate_hz=50 ticks=(\d+)", out.stderr)
    assert line is not None, out.stderr
    assert int(line.group(1)) > 10


@pytest.fixture
def broken_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Entry points to a module that fails to import and to a class that is not a Plugin."""
    (tmp_path / "edge_reg_broken.py").write_text("raise ImportError('needs libfoo')\n")
    (tmp_path / "edge_reg_other.py").write_text(
        "from agent.plugin.base import Plugin\n"
        "class NotAPlugin:\n    pass\n"
        "class Fine(Plugin):\n"
        "    def setup(self, ctx):\n        pass\n"
        "    def tick(self, now_ns):\n        pass\n"
    )
    info = tmp_path / "edge_reg-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: edge-reg\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        f"[{GROUP}]\nbroken = edge_reg_broken:Plugin\n"
        "notaplugin = edge_reg_other:NotAPlugin\nfine = edge_reg_other:Fine\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_a_broken_plugin_is_skipped_unless_configured(
    broken_site: Path, caplog: pytest.LogCaptureFixture
) -> None:
    registry = PluginRegistry()
    with caplog.at_level(logging.WARNING, logger="agent.plugin.registry"):
        found = registry.discover()
    assert "fine" in found and "broken" not in found and "notaplugin" not in found
    skipped = " ".join(r.getMessage() for r in caplog.records)
    assert "broken" in skipped and "needs libfoo" in skipped and "notaplugin" in skipped
    with pytest.raises(PluginError, match=r"'broken'.*failed to import.*needs libfoo"):
        registry.load("broken")
    with pytest.raises(PluginError, match="not a subclass of Plugin"):
        registry.load("notaplugin")


def test_an_unknown_plugin_names_the_known_ones() -> None:
    with pytest.raises(PluginError, match=r"'ghost' not found.*smart_home"):
        PluginRegistry().load("ghost")


def test_classes_can_be_handed_in_directly() -> None:
    class Local(Plugin):
        def setup(self, ctx: object) -> None:
            pass

        def tick(self, now_ns: int) -> None:
            pass

    registry = PluginRegistry(extra={"local": Local})
    assert registry.load("local") is Local and "local" in registry.names()
