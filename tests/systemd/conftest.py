"""The systemd suite's test bed: a booted bookworm container with the wheel installed as a service.

Session order: the cached root is copied and booted; the agent's wheel and the test-only fault
plugin's wheel are built on the host and pip-installed into /opt/edge-agent inside; then, as an
operator would, `edge-agent service install --board generic-x86`, an edit of the installed
config (this broker, a device id, the fault plugin, an OTA key), the MQTT password dropped in
/etc/edge-agent/credentials/ and `service install --config` again to render its LoadCredential=.
Starting the service is the first test's job.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sim.broker import Broker, free_port
from tests.support.nspawn import (
    PIP_CACHE_INSIDE,
    Container,
    cached_root,
    ensure_systemd_cgroup,
)
from tests.support.systemd import CONFIG, MQTT_USER, Service, toml_dumps

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[2]
FAULT_PLUGIN = Path(__file__).resolve().parent / "fault_plugin"
VENV = "/opt/edge-agent"
EDGE_AGENT = f"{VENV}/bin/edge-agent"
OTA_KEY = "/etc/edge-agent/ota-public.pem"
FAULT_EVENT_EVERY = 4
"""The fault plugin (20 Hz) emits an event every 4 ticks: 5 a second to count seqs on."""


def _require_host() -> None:
    if os.geteuid() != 0:
        pytest.fail("the systemd suite boots a container: run it as root (make systemd-test)")
    missing = [t for t in ("systemd-nspawn", "debootstrap", "nsenter") if not shutil.which(t)]
    if missing:
        pytest.fail(f"missing {', '.join(missing)}: run `make systemd-test` (installs them)")


@pytest.fixture(scope="session")
def container(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Container]:
    """A fresh copy of the cached root, booted; powered off and removed at the end."""
    _require_host()
    ensure_systemd_cgroup()
    started = time.monotonic()
    base = cached_root()
    prepared = time.monotonic() - started
    run_root = base.parent / f"run-{os.getpid()}"
    shutil.rmtree(run_root, ignore_errors=True)
    subprocess.run(["cp", "-a", "--reflink=auto", str(base), str(run_root)], check=True)
    copied = time.monotonic() - started - prepared
    # pip inside verifies the registry's certificate against the host's bundle.
    bundle = "etc/ssl/certs/ca-certificates.crt"
    shutil.copyfile(f"/{bundle}", run_root / bundle)
    pip_cache = base.parent / "pip"
    pip_cache.mkdir(exist_ok=True)
    box = Container(run_root, binds=[(pip_cache, PIP_CACHE_INSIDE)])
    try:
        booted = box.boot()
        print(
            f"\ncontainer: root ready in {prepared:.1f} s, copied in {copied:.1f} s, "
            f"booted in {booted:.1f} s"
        )
        yield box
    finally:
        with contextlib.suppress(Exception):
            box.poweroff(timeout=30)
        box.kill()
        if os.environ.get("EDGE_AGENT_TEST_KEEP") != "1":
            shutil.rmtree(run_root, ignore_errors=True)
            box.console.unlink(missing_ok=True)


@pytest.fixture(scope="session")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The agent's wheel (from a clean copy of the tree) and the fault plugin's wheel."""
    out = tmp_path_factory.mktemp("wheels")
    src = tmp_path_factory.mktemp("src") / "edge-agent"
    # A copy: an in-tree build's build/lib keeps modules deleted since and ships them.
    shutil.copytree(
        REPO,
        src,
        ignore=shutil.ignore_patterns(
            ".git", ".venv*", "build", "state", "*.egg-info", "__pycache__", ".*_cache"
        ),
    )
    for project in (src, FAULT_PLUGIN):
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(project)],
            check=True,
            capture_output=True,
        )
    return sorted(out.glob("*.whl"))


@pytest.fixture(scope="session")
def sd_broker(mosquitto_bin: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """A broker on 127.0.0.1 that knows user `edge`: a wrong password is refused, the test's
    own clients connect anonymously. The container shares the host's network, so it is
    reachable from the service."""
    work = tmp_path_factory.mktemp("sd-broker")
    subprocess.run(
        ["mosquitto_passwd", "-b", "-c", str(work / "passwd"), MQTT_USER, _password(work)],
        check=True,
        capture_output=True,
    )
    b = Broker(
        binary=mosquitto_bin,
        workdir=work,
        port=free_port(),
        extra_lines=[f"password_file {work / 'passwd'}", "connection_messages true"],
    )
    b.start()
    yield b
    b.kill()


def _password(work: Path) -> str:
    path = work / "password"
    if not path.exists():
        path.write_text(uuid.uuid4().hex)
    return path.read_text()


@pytest.fixture(scope="session")
def ota_keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An OTA signing key pair made with the host's edge-agent."""
    keys = tmp_path_factory.mktemp("ota-keys")
    subprocess.run(
        [sys.executable, "-m", "agent.cli.main", "ota", "keygen", "--out", str(keys)],
        check=True,
        capture_output=True,
    )
    return keys


@pytest.fixture(scope="session")
def service(container: Container, wheels: list[Path], sd_broker: Broker, ota_keys: Path) -> Service:
    """edge-agent installed as a service inside, configured for `sd_broker`, not started."""
    box = container
    started = time.monotonic()
    inbox = box.path("/root/wheels")
    inbox.mkdir(exist_ok=True)
    for wheel in wheels:
        shutil.copyfile(wheel, inbox / wheel.name)
    box.run("python3", "-m", "venv", VENV)
    box.run(
        f"{VENV}/bin/pip",
        "install",
        "-q",
        "--cache-dir",
        PIP_CACHE_INSIDE,
        *(f"/root/wheels/{w.name}" for w in wheels),
        timeout=600,
    )
    pip_s = time.monotonic() - started
    box.run(EDGE_AGENT, "service", "install", "--board", "generic-x86")
    device_id = f"sd-{uuid.uuid4().hex[:8]}"
    _operator_edits(box, device_id, sd_broker, ota_keys)
    box.run(EDGE_AGENT, "service", "install", "--config", CONFIG)
    box.run("systemctl", "daemon-reload")
    print(f"\nservice: wheels installed in {pip_s:.1f} s, device {device_id}")
    return Service(box, device_id, f"edge/{device_id}")


def _operator_edits(box: Container, device_id: str, broker: Broker, keys: Path) -> None:
    """What an operator changes in the installed config: the broker and its user, the device
    id, one more plugin, the OTA key; the password goes where LoadCredential= reads it."""
    doc: dict[str, Any] = tomllib.loads(box.path(CONFIG).read_text())
    doc["device"]["id"] = device_id
    doc["mqtt"].update(
        host="127.0.0.1",
        port=broker.port,
        username=MQTT_USER,
        password_credential="mqtt-password",
    )
    doc.setdefault("scheduler", {})["metrics_s"] = 1.0
    # A crash storm backs off to 2 s at most, so the storm test sees many crashes quickly.
    doc.setdefault("engine", {})["restart_backoff_max_s"] = 2.0
    doc.setdefault("ota", {}).update(trusted_keys=[OTA_KEY], health_window_s=2.0)
    doc["plugins"].append(
        {"name": "fault", "rate_hz": 20.0, "params": {"event_every": FAULT_EVENT_EVERY}}
    )
    box.path(CONFIG).write_text(toml_dumps(doc))
    shutil.copyfile(keys / "public.pem", box.path(OTA_KEY))
    creds = box.path("/etc/edge-agent/credentials")
    creds.mkdir(mode=0o700, exist_ok=True)
    secret = creds / "mqtt-password"
    secret.write_text(_password(broker.workdir))
    secret.chmod(0o600)
