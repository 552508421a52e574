"""The wheel carries what the agent needs at run time: built, installed into a fresh venv outside
the repository, and run from another folder (models verify, models list, a short run).

Offline: the wheel is built with this venv's setuptools (no build isolation) and installed with
--no-deps; the fresh venv sees this venv's dependencies through a .pth file, which does not run
the editable install's own .pth, so `agent` can only come from the wheel.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest

from sim.broker import Broker

REPO = Path(__file__).resolve().parents[2]
SOURCES = ["pyproject.toml", "setup.py", "README.md", "agent", "plugins", "sim", "models"]
SOURCES += ["firmware-configs", "docs"]


def _run(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{argv}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel built from this checkout; its root."""
    started = time.perf_counter()
    src = tmp_path_factory.mktemp("src")
    # A copy, so the in-tree build leaves no build/ or egg-info in the checkout.
    for name in SOURCES:
        origin = REPO / name
        if origin.is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "state")
            shutil.copytree(origin, src / name, ignore=ignore)
        else:
            shutil.copy2(origin, src / name)
    dist = tmp_path_factory.mktemp("dist")
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    _run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(dist), str(src)], src)
    (wheel,) = dist.glob("edge_agent-*.whl")
    venv = tmp_path_factory.mktemp("venv")
    _run([sys.executable, "-m", "venv", "--without-pip", "--clear", str(venv)], venv)
    python = venv / "bin" / "python"
    _run([*pip, "--python", str(python), "install", "--no-deps", str(wheel)], venv)
    purelib = _run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], venv
    )
    (Path(purelib.strip()) / "running-deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    print(
        f"wheel {wheel.name} {wheel.stat().st_size} bytes; built and installed in "
        f"{time.perf_counter() - started:.1f} s"
    )
    return venv


def _agent(venv: Path, *args: str, cwd: Path, env: dict[str, str] | None = None) -> str:
    return _run([str(venv / "bin" / "edge-agent"), *args], cwd, env)


def test_installed_agent_is_the_wheels(installed: Path, tmp_path: Path) -> None:
    where = _run(
        [str(installed / "bin/python"), "-c", "import agent; print(agent.__file__)"], tmp_path
    )
    assert where.startswith(str(installed)), where
    assert (installed / "share/doc/edge-agent/deploy.md").is_file()


def test_models_verify_and_list_find_the_shipped_models(installed: Path, tmp_path: Path) -> None:
    verify = _agent(installed, "models", "verify", cwd=tmp_path)
    listing = _agent(installed, "models", "list", cwd=tmp_path)
    names = ("energy_anomaly", "robot_policy", "smart_home_comfort", "waveform_classifier")
    for name in names:
        assert name in verify and name in listing
    assert "FAIL" not in verify
    folders = [line.split()[-1] for line in listing.splitlines()[2:]]
    assert len(folders) == 4 and all(f.startswith(str(installed)) for f in folders), listing


def test_run_on_the_installed_board_file(installed: Path, tmp_path: Path, broker: Broker) -> None:
    boards = _run(
        [
            str(installed / "bin/python"),
            "-c",
            "from agent.runtime.shipped import boards_dir; print(boards_dir())",
        ],
        tmp_path,
    ).strip()
    assert boards.startswith(str(installed))
    env = {
        **os.environ,
        # The board file's state_dir is relative to the checkout; a service gets /var/lib.
        "EDGE_AGENT__STATE_DIR": str(tmp_path / "state"),
        "EDGE_AGENT__MQTT__PORT": str(broker.port),
    }
    config = f"{boards}/generic-x86.toml"
    _agent(installed, "run", "--config", config, "--duration", "3", cwd=tmp_path, env=env)
    assert (tmp_path / "state" / "outbox.db").is_file()


def test_service_install_from_a_hidden_venv_plans_opt(installed: Path, tmp_path: Path) -> None:
    # The fresh venv lies under the temporary folder, which PrivateTmp= hides from the service.
    argv = [str(installed / "bin/edge-agent"), "service", "install", "--board", "generic-x86"]
    argv += ["--prefix", str(tmp_path / "root"), "--dry-run"]
    proc = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert "hidden from the service" in proc.stdout + proc.stderr
    # The shipped models move with the code: no warning about the venv's own models folder.
    assert "warning: models_dir" not in proc.stderr
    if proc.returncode == 0:  # a Python outside the hidden folders exists: a venv in /opt
        assert "ExecStart=/opt/edge-agent/bin/edge-agent run" in proc.stdout
        # The same version, from the very wheel this venv was installed from.
        assert re.search(r"would run: .* install .*edge_agent-.*\.whl\n", proc.stdout)
    else:
        assert proc.returncode == 2 and "no Python outside" in proc.stderr, proc.stderr
    assert not (tmp_path / "root").exists()
