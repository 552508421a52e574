"""What other parts of the agent build on: extra event sources, commands run by the agent itself,
and Prometheus's view of the sync counters."""

from __future__ import annotations

import queue
import time
from typing import Any

import pytest

from agent.plugin.channel import OutputChannel
from agent.sync.documents import COUNTERS
from agent.sync.service import SyncService
from tests.support.sync import FakeEngine


def test_an_added_channel_is_drained_into_the_durable_outbox_like_a_plugins(
    shared_broker: Any, make_config: Any, probe_factory: Any
) -> None:
    cfg = make_config(shared_broker)
    device = cfg.device.id
    probe = probe_factory(shared_broker)
    probe.subscribe(f"edge/{device}/events/schedule")
    service = SyncService(cfg, FakeEngine())
    channel = OutputChannel("schedule", ())
    service.add_channel(channel)
    service.start()
    try:
        with pytest.raises(RuntimeError, match="after start"):
            service.add_channel(OutputChannel("late", ()))
        channel.event(time.perf_counter_ns(), "schedule_ran", schedule="night", ok=True)
        event = probe.wait_payload(f"edge/{device}/events/schedule")
        assert event["kind"] == "schedule_ran" and event["seq"] == 1
        assert event["data"] == {"schedule": "night", "ok": True}
        assert service.wait_drained(5.0)
    finally:
        service.stop(1.0)


def test_a_submitted_command_runs_on_the_command_worker_and_is_counted(
    shared_broker: Any, make_config: Any, start_service: Any
) -> None:
    service, _ = start_service(make_config(shared_broker))
    replies: queue.Queue[dict[str, Any]] = queue.Queue()
    assert service.submit_command("ping", b'{"id": "sched-1"}', replies.put)
    reply = replies.get(timeout=5)
    assert reply["id"] == "sched-1" and reply["ok"] is True and reply["result"]["pong"]
    assert service.submit_command("plugin.stop", b'{"id": 2, "args": {}}', replies.put)
    assert replies.get(timeout=5)["error"]["code"] == "invalid_args"
    assert service.counters()["commands_failed"] == 1.0


def test_the_sync_counters_prometheus_exports_as_counters_exist_and_the_rest_are_gauges(
    shared_broker: Any, make_config: Any
) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from agent.service.prometheus import _sync_families

    counters = SyncService(make_config(shared_broker), FakeEngine()).counters()
    assert set(COUNTERS) < set(counters)

    class Collector:
        def collect(self) -> Any:
            return _sync_families(counters)

    registry = CollectorRegistry()
    registry.register(Collector())
    text = generate_latest(registry).decode()
    assert "# TYPE edge_agent_sync_events_persisted_total counter" in text
    assert "edge_agent_sync_commands_failed_total 0.0" in text
    assert "# TYPE edge_agent_sync_outbox_depth gauge" in text
    assert "edge_agent_sync_connected 0.0" in text
    assert "edge_agent_sync_outbox_depth_total" not in text
