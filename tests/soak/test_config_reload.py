"""Fault: a malformed config file on reload, through SIGHUP (`systemctl reload`) and through the
MQTT `config.reload` command, against a real agent process and a private broker.

For every flavour (TOML syntax error, unknown key, bad value, file deleted, file unreadable, a
model that does not exist) both paths must leave the old config running (loop rates measured
from the metrics' tick counters), name the problem by its key path in the log and in the command
reply, and keep the process alive; a valid edit then applies, by either path.
"""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sim.agentproc import ALL_PLUGINS, AgentProcess, agent_config
from sim.broker import Broker

pytestmark = pytest.mark.soak

RATES = {"smart_home": 10.0, "energy": 50.0, "robot": 500.0}
SPAN_S = 1.5
"""Seconds of metrics a rate is measured over."""
FAILED = r"config reload failed, config unchanged: (.+)"


def _unreadable(path: Path) -> str:
    """Make the file unreadable; returns the reason the agent will give."""
    if os.geteuid() == 0:  # root reads any mode: a directory in its place cannot be read either
        path.unlink()
        path.mkdir()
        return "Is a directory"
    path.chmod(0)
    return "Permission denied"


def _deleted(path: Path) -> str:
    """Delete the file; returns the reason the agent will give."""
    path.unlink()
    return "No such file or directory"


def _edit(old: str, new: str) -> Callable[[Path], str]:
    def edit(path: Path) -> str:
        text = path.read_text()
        assert old in text
        path.write_text(text.replace(old, new, 1))
        return ""

    return edit


FLAVOURS: dict[str, Callable[[Path], str]] = {
    "toml syntax": _edit('[[plugins]]\nname = "energy"', '[[plugins]\nname = "energy"'),
    "unknown key": _edit('name = "robot"', 'name = "robot"\ncolour = "red"'),
    "bad value": _edit("rate_hz = 50\n", "rate_hz = -5\n"),
    "deleted": _deleted,
    "unreadable": _unreadable,
    "missing model": _edit('"energy_anomaly"', '"no_such_model"'),
}
"""How each flavour breaks the file (the file reasons returned are the OS's words)."""


def _expected(flavour: str, path: Path, reason: str) -> str:
    """A regex the error must match: the key path (or file and position) and the bad value."""
    p = re.escape(str(path))
    return {
        "toml syntax": rf"{p}:\d+:\d+: TOML syntax error",
        "unknown key": r"plugins\[robot\]\.colour: unknown key \(got 'red'\)",
        "bad value": r"plugins\[energy\]\.rate_hz: .*greater than 0 \(got -5\)",
        "deleted": rf"{p}: cannot read config file: {reason}",
        "unreadable": rf"{p}: cannot read config file: {reason}",
        "missing model": r"plugins\[energy\]\.model: cannot use model: no model named "
        r"'no_such_model'.*\(got 'no_such_model'\)",
    }[flavour]


class _Metrics:
    """Loop rates from the agent's metrics: deadlines (ticks + skipped) per second of its clock."""

    def __init__(self, probe: Any, topic: str) -> None:
        self.probe = probe
        self.topic = topic

    def rates(self, span_s: float = SPAN_S) -> dict[str, tuple[float, float]]:
        """Per plugin (measured Hz, configured rate_hz) over metrics published from now on."""
        start = len(self.probe.payloads(self.topic))
        found: list[Any] = []

        def enough() -> bool:
            found[:] = self.probe.payloads(self.topic)[start:]
            return len(found) >= 2 and found[-1]["ts"] - found[0]["ts"] >= span_s

        assert self.probe.wait_for(enough, 10 + span_s), "no metrics"
        a, b = found[0], found[-1]
        out = {}
        for name, now in b["plugins"].items():
            then = a["plugins"][name]
            deadlines = (now["ticks"] + now["skipped"]) - (then["ticks"] + then["skipped"])
            out[name] = (deadlines / (b["ts"] - a["ts"]), float(now["rate_hz"]))
        return out


def _assert_rates(measured: dict[str, tuple[float, float]], want: dict[str, float]) -> None:
    print("  rates:", ", ".join(f"{n} {hz:.1f}/{rate:g} Hz" for n, (hz, rate) in measured.items()))
    for name, rate in want.items():
        hz, configured = measured[name]
        assert configured == rate, (name, configured)
        # Two metrics snapshots fall anywhere between two ticks: one period of slack each side.
        assert hz == pytest.approx(rate, rel=0.05, abs=2.0 / SPAN_S), (name, hz)


@pytest.fixture
def agent(
    broker: Broker, tmp_path: Path, unique_id: str
) -> Iterator[tuple[AgentProcess, Path, str]]:
    """A running agent process, its config file and the TOML it was started with."""
    path = tmp_path / "agent.toml"
    good = agent_config(
        state_dir=tmp_path / "state",
        host=broker.host,
        port=broker.port,
        device_id=unique_id,
        metrics_s=0.3,
        plugins=ALL_PLUGINS,
    )
    path.write_text(good)
    proc = AgentProcess(path, log_path=tmp_path / "agent.log")
    proc.start()
    try:
        proc.wait_ready(60)
        yield proc, path, good
    finally:
        code = proc.stop()
        assert code == 0, proc.log()[-3000:]


def test_a_malformed_config_on_reload_keeps_the_old_one_running(
    agent: tuple[AgentProcess, Path, str],
    broker: Broker,
    probe_factory: Callable[..., Any],
    unique_id: str,
) -> None:
    proc, path, good = agent
    base = f"edge/{unique_id}"
    probe = probe_factory(broker)
    probe.subscribe(f"{base}/metrics")
    metrics = _Metrics(probe, f"{base}/metrics")
    _assert_rates(metrics.rates(), RATES)

    for flavour, breaks in FLAVOURS.items():
        expected = _expected(flavour, path, breaks(path))
        # SIGHUP: one error line naming the problem.
        mark = len(proc.log())
        proc.signal(signal.SIGHUP)
        logged = proc.wait_log(FAILED, 10, after=mark).group(1)
        # The MQTT command: an error reply naming the same problem.
        reply = probe.command(base, "config.reload")
        assert reply["ok"] is False, reply
        error = reply["error"]
        print(f"\n{flavour}\n  log:   {logged}\n  reply: {error['code']}: {error['message']}")
        assert re.search(expected, logged), logged
        assert re.search(expected, error["message"]), error
        assert error["code"] == "invalid_config"
        assert proc.running
        _assert_rates(metrics.rates(), RATES)
        _restore(path, good)

    # A valid edit applies through SIGHUP ...
    path.write_text(good.replace("rate_hz = 50\n", "rate_hz = 25\n"))
    mark = len(proc.log())
    proc.signal(signal.SIGHUP)
    proc.wait_log(r"config reloaded: .*\"energy\": \[\"rate_hz\"\]", 10, after=mark)
    _assert_rates(metrics.rates(), {**RATES, "energy": 25.0})
    # ... and through the command.
    path.write_text(good.replace("rate_hz = 500\n", "rate_hz = 250\n"))
    reply = probe.command(base, "config.reload")
    assert reply["ok"] is True, reply
    assert reply["result"]["changed"]["changed"] == {"energy": ["rate_hz"], "robot": ["rate_hz"]}
    _assert_rates(metrics.rates(), {**RATES, "robot": 250.0})
    assert proc.log().count("config reload failed") == len(FLAVOURS)
    assert "Traceback" not in proc.log()


def _restore(path: Path, good: str) -> None:
    """Put the good file back, whatever the flavour left in its place."""
    if path.is_dir():
        path.rmdir()
    elif path.exists():
        path.chmod(0o644)
    path.write_text(good)
