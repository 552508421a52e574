"""Topic names and payload encodings (no broker)."""

from __future__ import annotations

import json

import numpy as np

from agent.events import Event
from agent.sync.payloads import clean, event_payload, telemetry_payloads
from agent.transport.topics import Topics


def test_topics_follow_root_device_and_group() -> None:
    t = Topics("edge", "dev-1", "lab")
    assert t.status == "edge/dev-1/status"
    assert t.state == "edge/dev-1/state"
    assert t.metrics == "edge/dev-1/metrics"
    assert t.telemetry("energy") == "edge/dev-1/telemetry/energy"
    assert t.events("energy") == "edge/dev-1/events/energy"
    assert t.reply("ping") == "edge/dev-1/reply/ping"
    assert t.command_filters() == ("edge/dev-1/cmd/+", "edge/group/lab/cmd/+", "edge/all/cmd/+")
    assert t.discovery("sensor", "x") == "homeassistant/sensor/dev-1/x/config"
    assert Topics("site7", "d", "g").status == "site7/d/status"


def test_command_names_only_from_our_command_topics() -> None:
    t = Topics("edge", "dev-1", "lab")
    assert t.command_name("edge/dev-1/cmd/plugin.set") == "plugin.set"
    assert t.command_name("edge/group/lab/cmd/ping") == "ping"
    assert t.command_name("edge/all/cmd/status") == "status"
    assert t.command_name("edge/group/other/cmd/ping") is None
    assert t.command_name("edge/dev-2/cmd/ping") is None
    assert t.command_name("edge/dev-1/cmd/") is None
    assert t.command_name("edge/dev-1/reply/ping") is None


def test_event_payload_has_id_seq_ts_and_strict_json() -> None:
    ev = Event(
        "energy",
        "anomaly",
        1_700_000_000_123_456_789,
        0.93,
        {"phase": 2, "power": np.float32(1.5), "bad": float("nan"), "v": np.arange(2)},
    )
    body = event_payload(ev, event_id="abc-1", seq=7)
    doc = json.loads(body, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
    assert doc == {
        "id": "abc-1",
        "seq": 7,
        "ts": 1700000000.123457,
        "plugin": "energy",
        "kind": "anomaly",
        "score": 0.93,
        "data": {"phase": 2, "power": 1.5, "bad": None, "v": [0, 1]},
    }
    plain = event_payload(Event("p", 'k"q', 0, float("inf")), event_id="x", seq=1)
    assert json.loads(plain)["score"] is None
    assert json.loads(plain)["kind"] == 'k"q'


def test_telemetry_batches_are_split_and_carry_last_values() -> None:
    ts = np.arange(1200, dtype=np.int64) * 1_000_000 + 1_700_000_000_000_000_000
    rows = np.stack([np.arange(1200.0), np.full(1200, np.nan)], axis=1)
    parts = [json.loads(p) for p in telemetry_payloads(("a", "b"), ts, rows, dropped=3)]
    assert [len(p["rows"]) for p in parts] == [500, 500, 200]
    assert parts[0]["fields"] == ["a", "b"]
    assert parts[-1]["last"] == {"a": 1199.0, "b": None}
    assert parts[0]["ts"][1] - parts[0]["ts"][0] > 0
    assert all(p["dropped"] == 3 for p in parts)


def test_clean_makes_anything_json_safe() -> None:
    assert clean({"a": (1, 2.5), 3: {np.int64(4)}, "b": b"\x01"}) == {
        "a": [1, 2.5],
        "3": [4],
        "b": "01",
    }
