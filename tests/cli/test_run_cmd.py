"""`edge-agent run` in a subprocess: summaries, clean stop on signals, only needed runtimes."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import engine as kit
from tests.support.paths import child_env

EDGE_AGENT = str(Path(sys.executable).parent / "edge-agent")
SUMMARY = re.compile(r"plugin=(\w+) state=(\w+) rate_hz=([\d.]+) ticks=(\d+)")


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The test plugins registered as an installed distribution, on PYTHONPATH."""
    site = kit.write_entry_points(tmp_path_factory.mktemp("site"))
    return child_env(site)


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
    # Nor the other commands' modules, nor what only they import (RSS for the agent's life).
    others = {"agent.cli.bench_cmd", "agent.cli.ota_cmd", "agent.modelimport", "tomli_w", "difflib"}
    assert not others & modules, others & modules


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


# --- SIGHUP: re-read the config file, apply it, or keep the old one and say why --------------


@pytest.fixture
def restore_sighup() -> Iterator[None]:
    """Put back pytest's own SIGHUP disposition after a test installs the agent's."""
    previous = signal.getsignal(signal.SIGHUP)
    yield
    signal.signal(signal.SIGHUP, previous)


@pytest.fixture
def running_app(tmp_path: Path) -> Iterator[tuple[Any, Path]]:
    """An in-process agent (no MQTT) started from a config file, and that file."""
    from agent.config import load_config
    from agent.plugin.registry import PluginRegistry
    from agent.service.compose import build_agent

    path = _config(tmp_path, PLUGINS)
    app = build_agent(
        load_config(path), config_path=path, registry=PluginRegistry(extra=kit.PLUGINS)
    )
    app.start()
    assert app.wait_ready(10)
    yield app, path
    app.stop(timeout=2.0)


def _rates(app: Any) -> dict[str, float]:
    return {p["name"]: p["rate_hz"] for p in app.host.plugins()}


BAD_CONFIGS = {
    "toml syntax": ("[[plugins]\nname = 'wave'\n", r"agent\.toml:\d+:\d+: TOML syntax error"),
    "unknown key": (PLUGINS + "colour = 'red'\n", r"plugins\[counter\]\.colour: "),
    "bad value": (
        PLUGINS.replace("rate_hz = 100", "rate_hz = -5"),
        r"plugins\[counter\]\.rate_hz: .*\(got -5\)",
    ),
    "missing model": (
        PLUGINS.replace('name = "wave"', 'name = "wave"\nmodel = "no_such_model"'),
        r"plugins\[wave\]\.model: cannot use model: .*\(got 'no_such_model'\)",
    ),
}


@pytest.mark.parametrize("flavour", [*BAD_CONFIGS, "deleted", "a directory"])
def test_a_bad_config_on_reload_keeps_the_old_one_and_logs_the_key(
    running_app: tuple[Any, Path], caplog: pytest.LogCaptureFixture, flavour: str
) -> None:
    from agent.cli.run_cmd import reload_config

    app, path = running_app
    before = _rates(app)
    if flavour == "deleted":
        path.unlink()
        expected = r"agent\.toml: cannot read config file: No such file or directory"
    elif flavour == "a directory":
        path.unlink()
        path.mkdir()
        expected = r"agent\.toml: cannot read config file: Is a directory"
    else:
        body, expected = BAD_CONFIGS[flavour]
        path.write_text(path.read_text().split("[[plugins]]")[0] + body.lstrip("\n"))
    caplog.set_level(logging.INFO, logger="agent.run")
    assert reload_config(app, path) is None
    failed = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(failed) == 1 and "config reload failed, config unchanged" in failed[0]
    assert re.search(expected, failed[0]), failed[0]
    assert _rates(app) == before
    assert all(p["state"] == "running" for p in app.host.plugins())


def test_sighup_reloads_the_file_through_the_run_loop(
    running_app: tuple[Any, Path], caplog: pytest.LogCaptureFixture, restore_sighup: None
) -> None:
    import argparse
    import threading

    from agent.cli import run_cmd

    app, path = running_app
    path.write_text(path.read_text().replace("rate_hz = 100", "rate_hz = 40"))
    reload = run_cmd._reload_on_sighup()
    os.kill(os.getpid(), signal.SIGHUP)  # handled between two bytecodes of this thread
    assert reload.wait(5)
    caplog.set_level(logging.INFO, logger="agent")
    args = argparse.Namespace(config=path, duration=0.3, summary_every=3600.0)
    run_cmd._watch(app, threading.Event(), reload, args)
    assert not reload.is_set()
    assert _rates(app) == {"wave": 200.0, "counter": 40.0}
    assert any(r.getMessage().startswith("config reloaded: ") for r in caplog.records)


@pytest.mark.parametrize(
    ("flags", "info_shown"), [(["-q"], False), (["--log-level", "debug"], True)]
)
def test_log_level_flags_override_the_config(
    env: dict[str, str], tmp_path: Path, flags: list[str], info_shown: bool
) -> None:
    config = _config(tmp_path, PLUGINS)
    out = subprocess.run(
        [EDGE_AGENT, "run", "--config", str(config), "--duration", "0.5", *flags],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    assert ("INFO agent.run: ready" in out.stderr) is info_shown, out.stderr
