"""The bench's per-stage breakdown stands in for a plugin's resources while sync keeps draining."""

from __future__ import annotations

import threading

from agent.bench.breakdown import breakdown
from tests.support import engine as kit


def test_the_channel_stays_drainable_while_the_breakdown_runs() -> None:
    host = kit.make_host(kit.make_config([{"name": "wave", "rate_hz": 200}]))
    host.start()
    stop = threading.Event()
    drained: list[int] = []
    counted: list[int] = []
    errors: list[BaseException] = []

    def drain() -> None:  # what the sync thread does: the channel the runner holds right now
        while not stop.wait(0.02):
            try:
                channel = host.runner("wave").res.channel
                if channel.pending[0]:
                    drained.append(len(channel.drain_telemetry()[1]))
                channel.drain_events()
                counted.append(channel.telemetry_dropped + channel.events_dropped)
            except BaseException as exc:  # reported by the assertion below
                errors.append(exc)

    try:
        assert host.wait_ready(10.0)
        thread = threading.Thread(target=drain)
        thread.start()
        report = breakdown(host.runner("wave"), 1.0)
        stop.set()
        thread.join()
    finally:
        stop.set()
        kit.stop_host(host)
    assert not errors, errors
    assert report["ticks"] > 50 and sum(drained) > 0 and counted
