"""The installed edge-agent service as the tests see it: systemctl properties, the journal, and
the operator's edits of /etc/edge-agent/agent.toml."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from tests.support.nspawn import Container

UNIT = "edge-agent.service"
CONFIG = "/etc/edge-agent/agent.toml"
MQTT_USER = "edge"
"""The broker user the service logs in as, its password handed over by LoadCredential=."""
PROPS = (
    "ActiveState",
    "SubState",
    "MainPID",
    "NRestarts",
    "Result",
    "ExecMainStatus",
    "ExecMainCode",
    "WatchdogUSec",
    "InactiveExitTimestampMonotonic",
    "ActiveEnterTimestampMonotonic",
    "ExecMainStartTimestampMonotonic",
    "StatusText",
)


def figures(test: str, **values: Any) -> None:
    """Print what a test measured as one JSON line (`make systemd-test` runs with -s)."""
    print(json.dumps({"test": test, **values}, sort_keys=True))


@dataclass
class Service:
    """edge-agent.service inside `box`; `device_id` and `base` name its MQTT topics."""

    box: Container
    device_id: str
    base: str

    def show(self) -> dict[str, str]:
        """The unit's properties of interest (`systemctl show`)."""
        out = self.box.run("systemctl", "show", UNIT, "-p", ",".join(PROPS)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def wait(
        self, predicate: Callable[[dict[str, str]], bool], timeout: float, step: float = 0.05
    ) -> dict[str, str]:
        """Poll `show()` until `predicate` holds; the properties then (fails on timeout)."""
        deadline = time.monotonic() + timeout
        props = self.show()
        while not predicate(props):
            assert time.monotonic() < deadline, f"unit never got there: {props}"
            time.sleep(step)
            props = self.show()
        return props

    def wait_running(self, timeout: float = 60.0) -> dict[str, str]:
        """Wait for active (running) with a main PID."""
        return self.wait(
            lambda p: (
                p["ActiveState"] == "active" and p["SubState"] == "running" and p["MainPID"] != "0"
            ),
            timeout,
        )

    def ensure_running(self) -> dict[str, str]:
        """Start the service when a previous test left it stopped or failed."""
        props = self.show()
        if props["ActiveState"] != "active":
            self.box.run("systemctl", "reset-failed", UNIT, check=False)
            self.box.run("systemctl", "start", UNIT)
        return self.wait_running()

    def journal(self, cursor: str | None = None) -> tuple[list[dict[str, Any]], str]:
        """The unit's journal entries (after `cursor`) and the cursor to read on from."""
        args = ["journalctl", "-u", UNIT, "-o", "json", "--no-pager", "--show-cursor", "-q"]
        if cursor:
            args += ["--after-cursor", cursor]
        out = self.box.run(*args, check=False).stdout
        entries, last = [], cursor or ""
        for line in out.splitlines():
            if line.startswith("-- cursor: "):
                last = line.removeprefix("-- cursor: ")
            elif line.startswith("{"):
                entries.append(json.loads(line))
        return entries, last

    def messages(self, cursor: str | None = None) -> list[str]:
        """Journal messages of the unit (the agent's log lines and systemd's about it)."""
        entries, _ = self.journal(cursor)
        return [_text(e.get("MESSAGE")) for e in entries]

    def cursor(self) -> str:
        """Where the journal ends now."""
        return self.journal()[1]

    def read_config(self) -> str:
        """The config file as installed."""
        return self.box.path(CONFIG).read_text()

    def write_config(self, text: str) -> None:
        """Replace the config file (as root would, keeping its mode)."""
        self.box.path(CONFIG).write_text(text)


def _text(message: Any) -> str:
    # journalctl -o json gives a list of byte values for messages that are not valid UTF-8.
    if isinstance(message, list):
        return bytes(message).decode(errors="replace")
    return str(message or "")


def toml_dumps(doc: Mapping[str, Any]) -> str:
    """TOML for a parsed config (tables, arrays of tables, scalars and lists of scalars)."""
    lines: list[str] = []
    _emit(doc, [], lines)
    return "\n".join(lines).lstrip("\n") + "\n"


def _emit(table: Mapping[str, Any], path: list[str], lines: list[str]) -> None:
    scalars = {k: v for k, v in table.items() if not _is_table(v) and not _is_table_list(v)}
    for key, value in scalars.items():
        lines.append(f"{_key(key)} = {_value(value)}")
    for key, value in table.items():
        if _is_table(value):
            lines += ["", f"[{'.'.join(_key(k) for k in [*path, key])}]"]
            _emit(value, [*path, key], lines)
        elif _is_table_list(value):
            for item in value:
                lines += ["", f"[[{'.'.join(_key(k) for k in [*path, key])}]]"]
                _emit(item, [*path, key], lines)


def _is_table(value: Any) -> bool:
    return isinstance(value, Mapping)


def _is_table_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, Mapping) for v in value)


def _key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else json.dumps(key)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {value!r} as TOML")
