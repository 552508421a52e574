"""The output channel's timestamps follow a stepped wall clock; a pinned offset stays pinned. The
same holds for the channel over an isolated plugin's shared ring (agent/engine/isolate_ring.py)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from agent.engine.isolate_ring import RowsBlock, SharedTelemetryChannel
from agent.plugin.channel import OutputChannel

MONTH_NS = 30 * 86_400 * 10**9

MakeChannel = Callable[..., OutputChannel]


@pytest.fixture(params=["in-process", "shared-ring"])
def make_channel(request: pytest.FixtureRequest) -> Iterator[MakeChannel]:
    """Builds a channel of one field: in-process, or over a shared-memory ring."""
    blocks: list[RowsBlock] = []

    def make(plugin: str, fields: tuple[str, ...], **kwargs: Any) -> OutputChannel:
        if request.param == "in-process":
            return OutputChannel(plugin, fields, **kwargs)
        block = RowsBlock.create(64, len(fields))
        blocks.append(block)
        return SharedTelemetryChannel(plugin, fields, block.ring, **kwargs)

    yield make
    for block in blocks:
        block.close()


@pytest.fixture
def wall_step(monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    """The channel's view of the clocks: real ones, its wall clock moved by `.ns`."""
    step = SimpleNamespace(ns=0)
    clocks = SimpleNamespace(
        time_ns=lambda: time.time_ns() + step.ns, perf_counter_ns=time.perf_counter_ns
    )
    monkeypatch.setattr("agent.plugin.channel.time", clocks)
    return step


def test_stamps_follow_a_wall_clock_step_from_the_next_drain(
    wall_step: SimpleNamespace, make_channel: MakeChannel
) -> None:
    ch = make_channel("p", ("x",))
    assert ch.telemetry(time.perf_counter_ns(), [1.0])
    wall_step.ns = MONTH_NS  # NTP steps the clock forward by a month
    assert ch.telemetry(time.perf_counter_ns(), [2.0])
    ts, _ = ch.drain_telemetry()
    # Rows stamped before the consumer noticed keep the old clock ...
    assert abs(int(ts[1]) - time.time_ns()) < 10**9
    # ... rows and events after the drain carry the new one.
    assert ch.telemetry(time.perf_counter_ns(), [3.0])
    assert ch.event(time.perf_counter_ns(), "e")
    ts, _ = ch.drain_telemetry()
    (ev,) = ch.drain_events()
    for stamp in (int(ts[0]), ev.ts_ns):
        assert abs(stamp - (time.time_ns() + MONTH_NS)) < 10**9


def test_a_pinned_offset_is_never_refreshed(
    wall_step: SimpleNamespace, make_channel: MakeChannel
) -> None:
    ch = make_channel("p", ("x",), wall_offset_ns=0)  # simulated time (the lockstep harness)
    wall_step.ns = MONTH_NS
    ch.drain_telemetry()
    now = time.perf_counter_ns()
    assert ch.telemetry(now, [1.0])
    ts, _ = ch.drain_telemetry()
    assert int(ts[0]) == now
    assert ch.wall_ns(now) == now
