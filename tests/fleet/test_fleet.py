"""A small fleet of real agent processes against a private Mosquitto: all online, every ping
answered, a signed group rollout active on every member (`make fleet`)."""

from __future__ import annotations

import pytest

from sim.fleet import run_fleet


@pytest.mark.fleet
@pytest.mark.mosquitto  # sim.fleet starts its own broker
def test_fleet_of_four_agents() -> None:
    result = run_fleet(4, duration=15.0, rate_hz=10.0, ping_rounds=5)
    assert result["online"] == 4
    assert result["ping_rtt_ms"]["replies"] == result["ping_rtt_ms"]["expected"]
    assert result["rollout"]["succeeded"] == result["rollout"]["members"] == 2
    assert result["msgs_per_s"] > 0
    assert result["rss_mb_per_agent"] is not None


@pytest.mark.fleet
def test_light_fleet_of_a_hundred_devices() -> None:
    """Light devices (the agent's sync, commands and OTA, no loops) in two worker processes:
    all online, every ping answered, a rollout to `all` active on every device."""
    from sim.lightfleet import run_light_fleet

    result = run_light_fleet(100, procs=2, ping_rounds=3, rest_s=2.0)
    assert result["start_failures"] == []
    assert result["started"] == result["online"] == 100
    assert result["ping_rtt_ms"]["replies"] == result["ping_rtt_ms"]["expected"] == 300
    rollout = result["rollout"]
    assert (rollout["succeeded"], rollout["exit_code"]) == (100, 0), rollout
    assert result["memory"]["kb_per_device"] > 0
