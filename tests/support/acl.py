"""The suites through the shipped ACL: `EDGE_AGENT_TEST_ACL=1` (`make test-acl`) locks every
test broker down with firmware-configs/mosquitto/edge-agent.acl.

Each test agent logs in as its device id (the config helpers in tests/support ask `login` for an
account), so the shipped `pattern` rules decide what it may publish and read, exactly as on a
locked-down fleet broker. The tests' own clients (probes, `ota publish`, `fleet status`, a fake
Home Assistant or sensor) connect without a username and stand for every account that is not a
device: in this mode anonymous clients may read and write anything. Accounts are added while the
broker runs (password and ACL files rewritten, then SIGHUP, which Mosquitto answers by reloading
both).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support.paths import REPO

ENABLED = os.environ.get("EDGE_AGENT_TEST_ACL") == "1"
SHIPPED_ACL = REPO / "firmware-configs" / "mosquitto" / "edge-agent.acl"
OPERATOR = "ops-admin"

RESTORED_SESSION_LOSES = pytest.mark.xfail(
    ENABLED,
    reason="Mosquitto 2.0 under an ACL queues nothing for a persistent session restored from disk "
    "until its client reconnects (eclipse-mosquitto/mosquitto#384): the test's consumer, not the "
    "agent, misses what is published in between (docs/security.md)",
    strict=False,  # whether the consumer or the agent reconnects first is a race
)
"""For a test that restarts the broker under a persistent consumer: an expected failure in ACL
mode."""


def shipped_rules() -> tuple[list[str], list[str]]:
    """The shipped ACL's `pattern` lines and its operator account's `topic` lines."""
    lines = [ln.strip() for ln in SHIPPED_ACL.read_text().splitlines()]
    patterns = [ln for ln in lines if ln.startswith("pattern ")]
    start = lines.index(f"user {OPERATOR}") + 1
    operator = []
    for ln in lines[start:]:
        if not ln.startswith("topic "):
            break
        operator.append(ln)
    return patterns, operator


def device_block(device: str, group: str, topics: tuple[str, ...] = ()) -> list[str]:
    """The per-device lines the shipped ACL asks for: the device's group's orders and updates,
    and its HAL topics."""
    return [
        f"user {device}",
        f"topic read edge/group/{group}/cmd/+",
        f"topic read edge/group/{group}/ota/+/manifest",
        f"topic read edge/group/{group}/ota/+/chunk/+",
        *(f"topic readwrite {t}" for t in topics),
    ]


@dataclass
class LockedBroker:
    """One running test Mosquitto under the shipped ACL, and the device accounts made so far."""

    broker: Any
    folder: Path
    password: str = field(default_factory=lambda: uuid.uuid4().hex)
    devices: dict[str, tuple[str, tuple[str, ...]]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def passwd(self) -> Path:
        return self.folder / "passwd"

    @property
    def acl(self) -> Path:
        return self.folder / "acl"

    @property
    def secret(self) -> Path:
        return self.folder / "device.secret"

    def config_lines(self) -> list[str]:
        """Broker config lines: anonymous allowed (everyone but devices), accounts checked, the
        ACL, and the info log that says when a reload happened."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self.secret.write_text(self.password + "\n")
        self._write_acl()
        self._add_password("acl-nobody")  # a password file may not be empty
        return [f"password_file {self.passwd}", f"acl_file {self.acl}", "log_type information"]

    def login(self, device: str, group: str, topics: tuple[str, ...] = ()) -> dict[str, Any]:
        """The `mqtt` settings that log `device` in (an account made on first use), with
        `topics` (its HAL topics) in its own block."""
        with self._lock:
            if self.devices.get(device) != (group, topics):
                known = device in self.devices
                self.devices[device] = (group, topics)
                if not known:
                    self._add_password(device)
                self._write_acl()
                self._reload()
        return {"username": device, "password_file": str(self.secret)}

    def _write_acl(self) -> None:
        patterns, _ = shipped_rules()
        lines = ["topic readwrite #", *patterns]  # topics before any `user`: anonymous clients
        for device, (group, topics) in self.devices.items():
            lines += device_block(device, group, topics)
        self.acl.write_text("\n".join(lines) + "\n")

    def _add_password(self, user: str) -> None:
        tool = shutil.which("mosquitto_passwd") or str(
            Path(self.broker.binary).with_name("mosquitto_passwd")
        )
        flags = ["-b"] if self.passwd.exists() else ["-b", "-c"]
        subprocess.run([tool, *flags, str(self.passwd), user, self.password], check=True)

    def _reload(self) -> None:
        if self.broker.proc is None or self.broker.proc.poll() is not None:
            return  # not running: it reads both files when it starts
        # Mosquitto logs this line, then re-reads both files before it serves anyone again.
        mark = self.broker.log().count("Reloading config")
        self.broker.proc.send_signal(signal.SIGHUP)
        end = time.monotonic() + 10
        while self.broker.log().count("Reloading config") <= mark:
            if time.monotonic() > end:
                raise AssertionError("mosquitto did not reload its ACL after SIGHUP")
            time.sleep(0.02)


BROKERS: dict[int, LockedBroker] = {}
"""Locked-down brokers by port: how a config helper that only knows the port finds its broker."""


def lock_down(broker: Any) -> list[str]:
    """Register `broker` (not started yet) as locked down; the config lines it must start with."""
    locked = LockedBroker(broker, Path(broker.workdir) / "acl-mode")
    BROKERS[broker.port] = locked
    return locked.config_lines()


def login(port: int, device: str, group: str, topics: tuple[str, ...] = ()) -> dict[str, Any]:
    """The `mqtt` settings a test agent on `port` needs: an account when the broker is locked
    down (with `topics`, its HAL topics, readable and writable), nothing otherwise."""
    locked = BROKERS.get(port)
    return locked.login(device, group, topics) if locked is not None else {}
