"""The sync benchmark runs and reports every figure (values are not asserted: noisy machine)."""

from __future__ import annotations

from typing import Any

from agent.bench.sync import bench_outbox, bench_sync


def test_bench_sync_reports_every_figure(broker: Any) -> None:
    result = bench_sync(broker.host, broker.port, seconds=2.0)
    for side in ("bare_paho", "agent"):
        for qos in ("qos0", "qos1"):
            figures = result[side][qos]
            assert figures["msgs_per_s"] > 0
            assert figures["latency_ms"]["p50"] is not None
            assert figures["latency_ms"]["p99"] >= figures["latency_ms"]["p50"]
    assert result["outbox"]["events_persisted_and_drained_per_s"] > 0
    assert result["outbox"]["cycle_per_s"] > 0
    assert set(result["agent_vs_bare_throughput"]) == {"qos0", "qos1"}


def test_bench_outbox_alone() -> None:
    figures = bench_outbox(n=2000, batch=50)
    assert figures["store_per_s"] > 0 and figures["ack_per_s"] > 0
