"""`edge-agent fleet status` against a real Mosquitto: a real agent, plus retained documents
published the way agents publish them (one device dead, one with a rejected update)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.cli.fleet_cmd import render
from agent.cli.main import main
from agent.config.sections import AgentConfig
from agent.sync.service import SyncService

Until = Callable[..., bool]


@pytest.fixture
def live_agent(broker: Any, tmp_path: Path, unique_id: str, until: Until) -> Iterator[SyncService]:
    """A real sync service (FakeEngine, one running plugin) on the test's own broker."""
    from tests.support.sync import FakeEngine, agent_config

    config: AgentConfig = agent_config(broker.port, f"{unique_id}-live", tmp_path / "s")
    engine = FakeEngine()
    service = SyncService(config, engine)
    service.start()
    assert until(lambda: service.link.connected, 10)
    yield service
    engine.close()
    service.stop(1.0)


def _retain(probe: Any, device: str, status: dict[str, Any], **docs: Any) -> None:
    probe.publish(f"edge/{device}/status", json.dumps(status), retain=True)
    for topic, doc in docs.items():
        probe.publish(f"edge/{device}/{topic.replace('__', '/')}", json.dumps(doc), retain=True)


def _rows(capsys: pytest.CaptureFixture[str], *argv: str) -> list[dict[str, Any]]:
    assert main(["fleet", "status", *argv, "--json", "--wait", "1"]) == 0
    rows: list[dict[str, Any]] = json.loads(capsys.readouterr().out)
    return rows


def test_rows_from_retained_documents_trouble_first(
    broker: Any,
    live_agent: SyncService,
    probe_factory: Callable[..., Any],
    unique_id: str,
    until: Until,
    capsys: pytest.CaptureFixture[str],
) -> None:
    probe = probe_factory(broker)
    state = {"ts": 1.0, "group": "lab", "plugins": [{"name": "gen", "state": "running"}],
             "models": {"gen": {"name": "m", "version": "1.0.0"}}}  # fmt: skip
    _retain(probe, f"{unique_id}-dead", {"state": "offline"}, state=state)
    _retain(
        probe,
        f"{unique_id}-bad",
        {"state": "online", "ts": 2.0, "group": "lab"},
        state=state,
        ota__m__status={"state": "rejected", "serial": 3, "reason": "untrusted key"},
    )
    other = {**state, "group": "other"}
    _retain(probe, f"{unique_id}-ok", {"state": "online", "ts": 3.0, "group": "other"}, state=other)
    address = f"{broker.host}:{broker.port}"
    live = live_agent.config.device.id
    # The live agent's retained state follows its connection within a moment.
    assert until(
        lambda: any(
            r["device"] == live and r["plugins"] for r in _rows(capsys, "--broker", address)
        ),
        10,
    )
    rows = _rows(capsys, "--broker", address)
    order = [r["device"] for r in rows]
    assert order.index(f"{unique_id}-dead") < order.index(f"{unique_id}-bad") < order.index(live)
    by = {r["device"]: r for r in rows}
    assert by[f"{unique_id}-dead"]["trouble"] == "offline"
    assert by[f"{unique_id}-bad"]["trouble"] == "ota m rejected"
    assert by[f"{unique_id}-bad"]["ota"] == {"m": "rejected"}
    assert by[f"{unique_id}-ok"]["models"] == {"gen": "1.0.0"}
    row = by[live]
    assert row["online"] and row["trouble"] == "" and row["group"] == "lab"
    assert (row["plugins_running"], row["plugins"]) == (1, 1)
    # --group keeps only that group's devices.
    lab = _rows(capsys, "--broker", address, "--group", "other")
    assert [r["device"] for r in lab] == [f"{unique_id}-ok"]
    # The text table says the same, one line per device and a summary.
    assert main(["fleet", "status", "--broker", address, "--wait", "1"]) == 0
    text = capsys.readouterr().out
    assert text.index(f"{unique_id}-dead") < text.index(live)
    assert "offline" in text and "with trouble" in text


def test_outbox_depth_comes_from_metrics_and_plugins_down_are_trouble() -> None:
    from agent.cli.fleet_cmd import DeviceView, rank

    view = DeviceView(
        "d1",
        status={"state": "online", "ts": 10.0},
        state={"plugins": [{"name": "a", "state": "running"}, {"name": "b", "state": "error"}]},
        metrics={"ts": 11.0, "sync": {"outbox_depth": 42.0}},
        ota={"m": {"state": "receiving"}},
    )
    row = view.row()
    assert row["outbox_depth"] == 42 and row["last_seen"] == 11.0
    assert row["plugins_down"] == ["b"] and row["trouble"] == "plugins not running: b"
    busy = DeviceView("d2", status={"state": "online"}, ota={"m": {"state": "receiving"}}).row()
    assert busy["trouble"] == "ota in progress: m"
    assert rank(row) < rank(busy) < rank(DeviceView("d3", status={"state": "online"}).row())
    assert "d1" in render([row], now=20.0)


def test_bad_broker_argument_and_unreachable_broker(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fleet", "status", "--broker", "nohost"]) == 2
    assert "--broker must be HOST:PORT" in capsys.readouterr().err
    from sim.broker import free_port

    port = free_port()
    assert main(["fleet", "status", "--broker", f"127.0.0.1:{port}", "--protocol", "5"]) == 1
    assert f"cannot connect to the broker at 127.0.0.1:{port}" in capsys.readouterr().err
