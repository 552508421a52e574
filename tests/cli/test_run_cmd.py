"""`edge-agent run` in a subprocess: summaries, clean stop on signals, only needed runtimes."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

KIT_DIR = Path(__file__).resolve().parents[1] / "engine"
sys.path.insert(0, str(KIT_DIR))

import engine_testkit as kit  # noqa: E402

EDGE_AGENT = str(Path(sys.executable).parent / "edge-agent")
SUMMARY = re.compile(r"plugin=(\w+) state=(\w+) rate_hz=([\d.]+) ticks=(\d+)")


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The test plugins registered as an installed distribution, on PYTHONPATH."""
    site = kit.write_entry_points(tmp_path_factory.mktemp("site"))
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(KIT_DIR)])}


def _config(tmp: Path, body: str) -> Path:
    path = tmp / "agent.toml"
    path.write_text(
        f'state_dir = "{tmp / "state"}"\nmodels_dir = "{kit.MODELS}"\n[mqtt]\nenabled = false\n'
        + body
    )
    return path


PLUGINS = """
[[plugins]]
name = "wave"
rate_hz = 200
[[plugins]]
name = "counter"
rate_hz = 100
"""


def test_run_for_a_duration_logs_summaries_and_imports_only_needed_runtimes(
    env: dict[str, str], tmp_path: Path
) -> None:
    dump = tmp_path / "modules.json"
    out = subprocess.run(
        [EDGE_AGENT, "run", "--config", str(_config(tmp_path, PLUGINS)), "--duration", "2"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**env, "EDGE_AGENT_DUMP_MODULES": str(dump)},
    )
    assert out.returncode == 0, out.stderr
    assert "ready: all loops ticking" in out.stderr
    ticks = {m[0]: int(m[3]) for m in SUMMARY.findall(out.stderr)}
    assert ticks["wave"] > 100 and ticks["counter"] > 50
    modules = set(json.loads(dump.read_text()))
    assert "ai_edge_litert" in modules  # the configured model is a .tflite
    for unneeded in ("onnxruntime", "paho", "apscheduler", "tensorflow", "rich"):
        assert unneeded not in modules, unneeded


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_everything_cleanly(
    env: dict[str, str], tmp_path: Path, signum: signal.Signals
) -> None:
    proc = subprocess.Popen(
        [EDGE_AGENT, "run", "--config", str(_config(tmp_path, PLUGINS))],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    try:
        assert proc.stderr is not None
        seen = []
        for line in proc.stderr:
            seen.append(line)
            if "ready:" in line:
                break
        proc.send_signal(signum)
        rest = proc.communicate(timeout=20)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, "".join(seen) + rest
    states = {m[0]: m[1] for m in SUMMARY.findall(rest)}
    assert states == {"wave": "stopped", "counter": "stopped"}


def test_a_bad_config_exits_2_naming_the_key(env: dict[str, str], tmp_path: Path) -> None:
    out = subprocess.run(
        [EDGE_AGENT, "run", "--config", str(_config(tmp_path, "[engine]\nspin_us = -1\n"))],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert out.returncode == 2
    assert "engine.spin_us" in out.stderr


def test_a_plugin_that_cannot_start_exits_1(env: dict[str, str], tmp_path: Path) -> None:
    body = '[[plugins]]\nname = "wave"\nmodel = "no_such_model"\n'
    out = subprocess.run(
        [EDGE_AGENT, "run", "--config", str(_config(tmp_path, body)), "--duration", "1"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert out.returncode == 1
    assert "wave" in out.stderr and "no_such_model" in out.stderr
