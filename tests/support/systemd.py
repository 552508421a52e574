"""The installed edge-agent service as the tests see it: systemctl properties, the journal, and
the operator's edits of /etc/edge-agent/agent.toml."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from tests.support.nspawn import Container
from tests.support.waiting import until

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
        seen: list[dict[str, str]] = []

        def reached() -> bool:
            seen[:] = [self.show()]
            return predicate(seen[0])

        assert until(reached, timeout, step), f"unit never got there: {seen}"
        return seen[0]

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


# -- what the service-life tests read from the service and its broker --------------------------

US = 1e6


def mono_s(props: dict[str, str], key: str) -> float:
    """A *TimestampMonotonic property in seconds (the container shares the host's clock)."""
    return int(props[key]) / US


def fault_seqs(probe: Any, base: str) -> list[int]:
    """Seqs of the fault plugin's events received so far, each once (QoS 1 may repeat)."""
    return sorted({p["seq"] for p in probe.payloads(f"{base}/events/fault") if "seq" in p})


def assert_no_seq_lost(probe: Any, base: str, beyond: int) -> dict[str, int]:
    """Wait for events past seq `beyond`, then check every seq from 1 arrived."""
    assert probe.wait_for(lambda: max(fault_seqs(probe, base), default=0) > beyond + 10, 30), (
        f"no events after seq {beyond}"
    )
    seqs = fault_seqs(probe, base)
    missing = sorted(set(range(1, seqs[-1] + 1)) - set(seqs))
    assert not missing, f"event seqs lost: {missing[:20]}"
    return {"events_seen": len(seqs), "last_seq": seqs[-1]}


def wait_status(probe: Any, base: str, after: int, state: str, timeout: float = 30.0) -> Any:
    """The first status payload with `state` among those received after the first `after`."""
    found: list[Any] = []

    def check() -> bool:
        new = probe.payloads(f"{base}/status")[after:]
        found[:] = [p for p in new if isinstance(p, dict) and p.get("state") == state]
        return bool(found)

    assert probe.wait_for(check, timeout), f"status never {state!r}"
    return found[0]


def n_status(probe: Any, base: str) -> int:
    return len(probe.payloads(f"{base}/status"))


def index_of(lines: list[str], pattern: str, start: int = 0) -> int:
    """Index of the first line from `start` matching `pattern` (-1 when none)."""
    rx = re.compile(pattern)
    return next((i for i in range(start, len(lines)) if rx.search(lines[i])), -1)


def restart_figures(service: Service, before: dict[str, str], t0: float) -> dict[str, Any]:
    """Wait for the restart that follows a fault at host monotonic `t0`: NRestarts + 1, a new
    main PID, active again. Seconds to the new process and to active."""
    props = service.wait(
        lambda p: (
            int(p["NRestarts"]) > int(before["NRestarts"])
            and p["MainPID"] not in ("0", before["MainPID"])
            and p["ActiveState"] == "active"
        ),
        timeout=60,
        step=0.1,
    )
    assert int(props["NRestarts"]) == int(before["NRestarts"]) + 1, props
    return {
        "props": props,
        "restarted_after_s": round(mono_s(props, "ExecMainStartTimestampMonotonic") - t0, 2),
        "active_after_s": round(mono_s(props, "ActiveEnterTimestampMonotonic") - t0, 2),
    }
