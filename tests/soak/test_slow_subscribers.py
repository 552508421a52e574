"""Fault: a slow consumer (issue 7), second face; the first is in test_slow_consumer.py.

A backend subscriber that stops reading its socket, and one that stops acknowledging: the
broker queues for them, and the agent's publish rate and loop rates are those of a run phase
without them (ratios within the same run).

Figures are printed (`pytest -s`) as one JSON line per test.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agent.config.sections import AgentConfig
from agent.service.app import AgentApp
from sim.throttle import Throttle
from tests.support.soak import (
    Backend,
    Sampler,
    Window,
    assert_contiguous,
    slow_consumer_config,
)

pytestmark = pytest.mark.soak

LOOP_SLACK = 0.8
"""A loop's tick ratio with slow subscribers is at least this share of its ratio without them
(as in test_slow_consumer.py)."""


def _phase(app: AgentApp, fast: Backend, seconds: float) -> tuple[dict[str, Any], dict[str, float]]:
    """Run `seconds` as they are: the loops' window figures with the fast subscriber's receive
    rate, and the sampled peaks."""
    sampler = Sampler(app)
    window = Window(app)
    n0 = len(fast.payloads)
    time.sleep(seconds)  # the phase measured
    figures = window.close()
    figures["fast_received_per_s"] = round((len(fast.payloads) - n0) / figures["seconds"], 2)
    return figures, sampler.stop()


def test_b_slow_backend_subscribers_do_not_slow_the_agent(
    broker: Any,
    run_agent: Callable[[AgentConfig], AgentApp],
    unique_id: str,
    tmp_path: Path,
    until: Callable[..., bool],
) -> None:
    # Telemetry flushed 4 times a second: several messages a second, past the broker's in-flight
    # limit of 100 per subscriber (sim/broker.py) within seconds, so the broker really queues.
    config = slow_consumer_config(
        broker.port, unique_id, tmp_path / "state", scheduler={"telemetry_flush_s": 0.25}
    )
    base = f"edge/{unique_id}"
    filters = [f"{base}/events/#", f"{base}/telemetry/#"]
    made: list[Backend] = []
    relay = Throttle(broker.host, broker.port)
    try:
        fast = Backend(broker.host, broker.port, filters, manual_ack=False)
        made.append(fast)
        app = run_agent(config)
        sync = app.sync
        assert sync is not None
        assert until(lambda: sync.link.connected, 10)
        # Warmed up: the fast subscriber has the first flushes of every stream.
        assert until(lambda: len(fast.payloads) >= 20, 30), len(fast.payloads)

        # Without a slow subscriber.
        alone, peaks_alone = _phase(app, fast, 15.0)

        stalled_ack, not_reading, slowed, peaks_slowed = _with_slow_subscribers(
            app, broker, fast, relay, filters, made, until
        )
        withheld_then = len(stalled_ack.withheld)
        received_then = len(stalled_ack.payloads)
        _catch_up(app, fast, relay, stalled_ack, not_reading, until)
        _check_slow_subscribers(
            (alone, peaks_alone),
            (slowed, peaks_slowed),
            (withheld_then, received_then),
            (fast, stalled_ack, not_reading),
        )
    finally:
        for b in made:
            b.close()
        relay.close()


def _with_slow_subscribers(
    app: AgentApp,
    broker: Any,
    fast: Backend,
    relay: Throttle,
    filters: list[str],
    made: list[Backend],
    until: Callable[..., bool],
) -> tuple[Backend, Backend, dict[str, Any], dict[str, float]]:
    """A phase with one subscriber that stopped acknowledging and one that stopped reading its
    socket (behind a paused relay): the two, the phase's figures and peaks."""
    # The one not reading sits behind a paused relay: its TCP connection is up, the broker's
    # writes just stop draining.
    stalled_ack = Backend(broker.host, broker.port, filters, manual_ack=True)
    made.append(stalled_ack)
    not_reading = Backend(relay.host, relay.port, filters, manual_ack=False)
    made.append(not_reading)
    relay.pause()
    # Past 100 unacknowledged messages each, the broker queues for them from here on.
    assert until(lambda: len(stalled_ack.withheld) >= 100, 40), len(stalled_ack.withheld)
    # No signal reaches the test when the broker's writes to the paused relay stop
    # draining: the scenario gives it 2 s of its in-flight window to fill those buffers.
    time.sleep(2.0)
    slowed, peaks_slowed = _phase(app, fast, 15.0)

    return stalled_ack, not_reading, slowed, peaks_slowed


def _catch_up(
    app: AgentApp,
    fast: Backend,
    relay: Throttle,
    stalled_ack: Backend,
    not_reading: Backend,
    until: Callable[..., bool],
) -> None:
    """Let them catch up: the broker held every message for them."""
    sync = app.sync
    assert sync is not None
    relay.resume()
    stalled_ack.release()
    persisted = sync.counters()["events_persisted"]

    def caught_up() -> bool:
        # Each has the newest event of every plugin that the always-fast one has.
        last = {p: s[-1] for p, s in fast.events().items()}
        if sum(last.values()) < persisted:
            return False
        for b in (stalled_ack, not_reading):
            got = b.events()
            if any(got.get(p, [0])[-1] < n for p, n in last.items()):
                return False
        return True

    assert until(caught_up, 60)


def _check_slow_subscribers(
    alone_phase: tuple[dict[str, Any], dict[str, float]],
    slowed_phase: tuple[dict[str, Any], dict[str, float]],
    stalled_counts: tuple[int, int],
    subscribers: tuple[Backend, Backend, Backend],
) -> None:
    """The agent's publish and loop rates with slow subscribers, against the phase without."""
    alone, peaks_alone = alone_phase
    slowed, peaks_slowed = slowed_phase
    withheld_then, received_then = stalled_counts
    fast, stalled_ack, not_reading = subscribers
    figures = {
        "alone": alone,
        "with_slow_subscribers": slowed,
        "publish_rate_ratio": round(slowed["acked_per_s"] / alone["acked_per_s"], 3),
        "fast_subscriber_rate_ratio": round(
            slowed["fast_received_per_s"] / alone["fast_received_per_s"], 3
        ),
        "stalled_ack_withheld": withheld_then,
        "stalled_ack_received_while_stalled": received_then,
        "peaks_alone": peaks_alone,
        "peaks_slowed": peaks_slowed,
        "events": {
            "fast": sum(len(s) for s in fast.events().values()),
            "stalled_ack": sum(len(s) for s in stalled_ack.events().values()),
            "not_reading": sum(len(s) for s in not_reading.events().values()),
        },
    }
    print("\nslow subscribers:", json.dumps(figures))

    # The broker stopped sending to the non-acknowledging one at its in-flight limit...
    assert withheld_then <= 100 + 5, withheld_then
    # ...while the agent published at the same rate and its loops kept theirs.
    assert 0.85 <= figures["publish_rate_ratio"] <= 1.15, figures
    assert 0.85 <= figures["fast_subscriber_rate_ratio"] <= 1.15, figures
    for name, ratio in alone["tick_ratio"].items():
        assert slowed["tick_ratio"][name] >= LOOP_SLACK * ratio, (name, slowed, alone)
    assert peaks_slowed["outbox_depth"] <= max(10.0, 2 * peaks_alone["outbox_depth"])
    # Every subscriber got every event from its subscription on, contiguous per plugin.
    assert_contiguous(fast.events())
    for b in (stalled_ack, not_reading):
        assert_contiguous(b.events(), from_first=True)
