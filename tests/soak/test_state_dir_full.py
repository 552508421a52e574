"""Fault: the state directory fills up (issue 7). A real tmpfs as state_dir, filled to ENOSPC.

While full, outbox writes fail and are reported (status, counters, one log line, the systemd
STATUS line), every loop keeps its rate, events wait in the bounded backlog and, past it, are
dropped and counted at the plugin rings. Once space is freed the backlog is stored and delivered
with contiguous per-plugin seq numbers: nothing is lost that was not counted. An agent that
starts on a full state_dir runs its loops, reports the error and opens the outbox it left once
space is back.

Needs root (or CAP_SYS_ADMIN) for `mount -t tmpfs`; skipped with that reason otherwise.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import pytest
from pydantic import Field

from agent.config.sections import AgentConfig
from agent.engine.report import rss_mb
from agent.plugin.base import Plugin, PluginContext, PluginParams
from agent.plugin.registry import PluginRegistry
from agent.service.app import AgentApp
from agent.service.compose import build_agent, status_line
from agent.sync.outbox import Message, MessageClass, Outbox
from agent.sync.service import SyncService
from sim.broker import Broker
from tests.support.disk import SmallDisk
from tests.support.eventsink import EventSink
from tests.support.soak import GENERIC, all_plugins_config
from tests.support.waiting import unchanged

pytestmark = pytest.mark.soak

BURST_HZ = 200.0
BURST_PER_TICK = 10  # 2,000 events/s: past the 20,000-event backlog in about 10 s


# -- an event source fast enough to fill the backlog within the test -------------------------------


class BurstParams(PluginParams):
    """Params of BurstPlugin."""

    per_tick: int = Field(0, ge=0, le=100, description="Events raised per tick")


class BurstPlugin(Plugin):
    """Raises `per_tick` numbered events per tick; counts what its ring accepted and refused."""

    Params = BurstParams
    default_rate_hz = BURST_HZ
    raised: ClassVar[int] = 0
    refused: ClassVar[int] = 0

    def setup(self, ctx: PluginContext) -> None:
        """Keep the channel and params."""
        self.out = ctx.out
        self.per_tick = ctx.params.per_tick  # type: ignore[attr-defined]
        type(self).raised = type(self).refused = 0

    def tick(self, now_ns: int) -> None:
        """Raise this tick's events, each numbered `n` in the order raised."""
        cls = type(self)
        for _ in range(self.per_tick):
            if not self.out.event(now_ns, "burst", 1.0, n=cls.raised):
                cls.refused += 1
            cls.raised += 1

    def apply_params(self, params: PluginParams) -> None:
        """Take the new rate of events."""
        self.per_tick = params.per_tick  # type: ignore[attr-defined]


# -- helpers ------------------------------------------------------------------------------------


def full_config(
    broker: Broker, device_id: str, state_dir: Path, *, burst: bool = True
) -> AgentConfig:
    """All plugins (and the burst plugin), QoS 1 telemetry, this broker."""
    return all_plugins_config(
        broker.port,
        device_id,
        state_dir,
        extra_plugins=[{"name": "burst", "rate_hz": BURST_HZ}] if burst else [],
        # QoS 1 telemetry goes through the outbox too: what happens to it is part of the test.
        mqtt={"telemetry_qos": 1},
        scheduler={"outbox_compaction_s": 2.0, "metrics_s": 1.0},
    )


def received_events(sink: EventSink) -> dict[str, list[dict[str, Any]]]:
    """Event payloads per plugin, one per seq (a QoS 1 redelivery counted once), seq order."""
    per_plugin: dict[str, dict[int, dict[str, Any]]] = {}
    for p in sink.payloads():
        per_plugin.setdefault(p["plugin"], {})[p["seq"]] = p
    return {name: [seqs[s] for s in sorted(seqs)] for name, seqs in per_plugin.items()}


def tick_rates(app: AgentApp, t0: float, c0: dict[str, int]) -> dict[str, float]:
    """Ticks per configured tick since (t0, c0), per plugin: 1.0 is exactly on rate."""
    elapsed = time.monotonic() - t0
    now = app.host.tick_counters()
    rates = {p["name"]: p["rate_hz"] for p in app.host.plugins()}
    return {name: (now[name] - c0[name]) / (rates[name] * elapsed) for name in c0}


def sync_records(
    caplog: pytest.LogCaptureFixture, level: int, since: int = 0
) -> list[logging.LogRecord]:
    """Log records of the sync package at `level` or above, from record number `since` on."""
    return [
        r for r in caplog.records[since:] if r.name.startswith("agent.sync") and r.levelno >= level
    ]


# -- the tests ----------------------------------------------------------------------------------


def test_a_full_state_dir_is_reported_loops_keep_rate_and_nothing_uncounted_is_lost(
    small_disk: Callable[[str], SmallDisk],
    broker: Broker,
    probe_factory: Any,
    event_sink: Callable[[Broker, list[str]], EventSink],
    unique_id: str,
    until: Callable[..., bool],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="agent.sync")
    disk = small_disk("32m")
    cfg = full_config(broker, unique_id, disk.path)
    sink = event_sink(broker, [f"edge/{unique_id}/events/#"])  # before start: every seq from 1
    probe = probe_factory(broker)
    probe.subscribe(f"edge/{unique_id}/telemetry/#")
    app = build_agent(cfg, registry=PluginRegistry(extra={"burst": BurstPlugin}))
    app.start()
    try:
        run = _FullRun(app, disk, probe, sink, f"edge/{unique_id}/telemetry/+", until, caplog)
        run.healthy_baseline()
        run.fill_the_disk()
        run.check_reported()
        run.free_space_and_drain()
        run.check_nothing_uncounted_lost()
        print("\nstate_dir full:", json.dumps(run.figures()))
    finally:
        app.stop(timeout=3.0)


class _FullRun:
    """The phases of one run against a filling state_dir; what one phase measured, the next
    compares with."""

    def __init__(
        self,
        app: AgentApp,
        disk: SmallDisk,
        probe: Any,
        sink: EventSink,
        telemetry: str,
        until: Callable[..., bool],
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        self.app, self.disk, self.probe, self.sink = app, disk, probe, sink
        self.telemetry, self.until, self.caplog = telemetry, until, caplog
        assert app.sync is not None
        self.sync: SyncService = app.sync
        self.rss_during: list[float] = []

    def healthy_baseline(self) -> None:
        """Loop rates and memory without the fault, in the same run as the fault."""
        app, sync, until = self.app, self.sync, self.until
        assert app.wait_ready(20)
        assert until(lambda: sync.counters()["connected"] == 1.0, 10)
        assert until(lambda: self.probe.count(self.telemetry) > 0, 10)
        t0, c0 = time.monotonic(), app.host.tick_counters()
        time.sleep(2.0)  # the healthy window measured
        self.base_rates = tick_rates(app, t0, c0)
        self.rss_before = rss_mb()
        assert sync.counters()["outbox_errors"] == 0

    def fill_the_disk(self) -> None:
        """The disk fills under a burst of events: past the backlog's bound, then the burst ends."""
        app, sync, until = self.app, self.sync, self.until
        self.filled = self.disk.fill()
        assert self.disk.free_bytes() == 0
        self.records_before = len(self.caplog.records)
        app.host.set_params("burst", {"per_tick": BURST_PER_TICK})
        assert until(lambda: sync.counters()["outbox_failing"] == 1.0, 15), sync.status()
        t_full, c_full = time.monotonic(), app.host.tick_counters()
        self.telemetry_at_full = self.probe.count(self.telemetry)

        def backlog_overflowed() -> bool:
            self.rss_during.append(rss_mb())
            return sync.counters()["channel_events_dropped"] > 0

        assert until(backlog_overflowed, 40), sync.counters()
        self.rss_at_bound = self.rss_during[-1]
        time.sleep(2.0)  # past the bound for a while: memory must stay where it is
        self.rss_during.append(rss_mb())
        self.full_rates = tick_rates(app, t_full, c_full)
        raised = BurstPlugin.raised
        app.host.set_params("burst", {"per_tick": 0})
        self.full_s = time.monotonic() - t_full
        # The new params apply between two ticks: the burst has ended once nothing more comes.
        assert until(lambda: unchanged(lambda: BurstPlugin.raised, 0.05), 5, 0.0), raised
        self.counters = sync.counters()
        self.status = sync.status()
        self.line = status_line(app)

    def check_reported(self) -> None:
        """Status, counters, the systemd STATUS line and one log line for the episode; the
        backlog bounded, telemetry dropped and counted, loops on rate, memory flat."""
        status, counters = self.status, self.counters
        assert "full" in status["outbox"]["last_error"], status["outbox"]
        assert str(self.disk.path) in status["outbox"]["last_error"]
        assert status["outbox"]["error_since"] is not None
        assert counters["outbox_errors"] >= 1
        assert "outbox writes failing" in self.line
        errors = sync_records(self.caplog, logging.WARNING, self.records_before)
        outbox_errors = [
            r
            for r in errors
            if r.name.startswith("agent.sync.outbox") and r.levelno >= logging.ERROR
        ]
        assert len(outbox_errors) == 1, [r.getMessage() for r in errors]  # not one per retry
        # A write may really succeed mid-episode (compaction truncates the WAL, freeing a few
        # pages): that recovery is logged once, and the failure after it shares the first
        # line's rate limit.
        assert len(errors) <= 2, [r.getMessage() for r in errors]
        assert not any(r.exc_info for r in errors), "a traceback instead of a report"
        # Events held in the bounded backlog, then left in the rings whose overflow is counted.
        self.backlog = counters["events_backlog"]
        assert 20000 <= self.backlog <= 20000 + 4 * 1024
        self.dropped = counters["channel_events_dropped"]
        assert self.dropped > 0 and self.dropped == BurstPlugin.refused
        # QoS 1 telemetry is not kept while the outbox fails: dropped and counted.
        assert counters["telemetry_error_dropped"] > 0
        # (a few batches stored just before the first failure may still go out)
        assert self.probe.count(self.telemetry) - self.telemetry_at_full <= 6
        # Every loop kept its rate (ratio to the configured rate, against the healthy baseline).
        for name, ratio in self.full_rates.items():
            assert ratio >= 0.8 * self.base_rates[name], (name, self.full_rates, self.base_rates)
        # Memory bounded: the backlog is capped, so memory stops growing once it is reached.
        assert max(self.rss_during) - self.rss_before < 50
        assert self.rss_during[-1] - self.rss_at_bound < 8

    def free_space_and_drain(self) -> None:
        """Space is freed: the outbox writes again and the backlog drains to the broker."""
        app, sync, sink, until = self.app, self.sync, self.sink, self.until
        t_free, c_free = time.monotonic(), app.host.tick_counters()
        self.disk.free()
        assert until(lambda: sync.counters()["outbox_failing"] == 0.0, 10), sync.status()
        assert until(lambda: sync.wait_drained(0.1), 60), sync.counters()
        assert until(lambda: sink.count() >= sync.counters()["events_persisted"], 60, 0.25)
        self.drain_s = time.monotonic() - t_free
        self.drain_rates = tick_rates(app, t_free, c_free)
        self.rss_after = rss_mb()  # before this test parses 20,000 payloads in this process

        def everything_received() -> bool:
            # The three plugins keep raising events: compare at a moment both sides agree.
            got = sum(len(v) for v in received_events(sink).values())
            return sync.wait_drained(0.05) and got == sync.counters()["events_persisted"]

        assert until(everything_received, 20, 0.25), sync.counters()
        self.after = sync.counters()
        assert sync.status()["outbox"]["last_error"] is None
        recovered = [r.getMessage() for r in sync_records(self.caplog, logging.WARNING)]
        assert any("writable again" in m for m in recovered), recovered
        assert self.probe.wait_for(
            lambda: self.probe.count(self.telemetry) > self.telemetry_at_full + 6, 10
        )

    def check_nothing_uncounted_lost(self) -> None:
        """Contiguous seqs per plugin; every burst event either received (in the order raised)
        or counted as dropped at its ring."""
        events = received_events(self.sink)
        for name, got in events.items():
            assert [p["seq"] for p in got] == list(range(1, len(got) + 1)), name
        self.burst = [p["data"]["n"] for p in events["burst"]]
        assert self.burst == sorted(self.burst)
        assert len(self.burst) + self.after["channel_events_dropped"] == BurstPlugin.raised
        # Nothing dropped after recovery.
        assert self.after["channel_events_dropped"] == self.dropped
        assert not any(r.exc_info for r in self.caplog.records if r.name.startswith("agent"))

    def figures(self) -> dict[str, Any]:
        """What this run measured."""
        base = self.base_rates
        return {
            "filler_mib": self.filled >> 20,
            "full_s": round(self.full_s, 1),
            "backlog_events": self.backlog,
            "ring_dropped": self.dropped,
            "outbox_errors": self.counters["outbox_errors"],
            "telemetry_rows_dropped": self.counters["telemetry_error_dropped"],
            "tick_ratio_full": {n: round(r / base[n], 3) for n, r in self.full_rates.items()},
            "drained_events": len(self.burst),
            "drain_s": round(self.drain_s, 1),
            "tick_ratio_draining": {n: round(r / base[n], 3) for n, r in self.drain_rates.items()},
            "rss_mib": {
                "before": self.rss_before,
                "at_bound": self.rss_at_bound,
                "2s_later": self.rss_during[-1],
                "after": self.rss_after,
            },
        }


def test_starting_on_a_full_state_dir_runs_the_loops_and_opens_the_outbox_later(
    small_disk: Callable[[str], SmallDisk],
    broker: Broker,
    probe_factory: Any,
    unique_id: str,
    until: Callable[..., bool],
    tmp_path: Path,
) -> None:
    disk = small_disk("2m")
    cfg = full_config(broker, unique_id, disk.path, burst=False)
    topic = f"edge/{unique_id}/events/smart_home"
    # An outbox left by the previous run: three events still to deliver.
    previous = Outbox(disk.path / "outbox.db", max_bytes=cfg.outbox.max_bytes)
    previous.add(
        [
            Message(MessageClass.EVENT, topic, b'{"seq":%d,"plugin":"smart_home"}' % i)
            for i in (1, 2, 3)
        ],
        seqs={"smart_home": 3},
    )
    previous.close()
    disk.fill()

    _as_a_process_on_a_full_state_dir(disk, broker, unique_id, tmp_path)

    # In-process: loops tick while the outbox cannot open; the error is in status; once space
    # is back the outbox opens by itself and delivers what the previous run left.
    probe = probe_factory(broker)
    probe.subscribe(f"edge/{unique_id}/events/#")
    app = build_agent(cfg)
    app.start()
    try:
        assert app.wait_ready(10)
        status = app.sync.status()
        assert f"state_dir {disk.path} is full" in status["outbox"]["last_error"]
        assert status["counters"]["outbox_failing"] == 1.0
        before = app.host.tick_counters()
        assert until(lambda: app.host.tick_counters()["robot"] > before["robot"] + 500, 10)
        assert not any(p.name.startswith("outbox.db.corrupt") for p in disk.path.iterdir())
        disk.free()
        assert probe.wait_for(lambda: len(probe.payloads(topic)) >= 3, 40)
        assert [p["seq"] for p in probe.payloads(topic)][:3] == [1, 2, 3]
        assert app.sync.status()["outbox"]["last_error"] is None
        assert app.sync.counters()["outbox_failing"] == 0.0
    finally:
        app.stop(timeout=3.0)


def _as_a_process_on_a_full_state_dir(
    disk: SmallDisk, broker: Broker, unique_id: str, tmp_path: Path
) -> None:
    """As a process: it starts, its loops run, and it says why nothing is stored."""
    env = {
        **os.environ,
        "EDGE_AGENT__STATE_DIR": str(disk.path),
        "EDGE_AGENT__MQTT__PORT": str(broker.port),
        "EDGE_AGENT__DEVICE__ID": unique_id,
    }
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "agent.cli.main",
            "run",
            "--config",
            str(GENERIC),
            "--duration",
            "2",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert f"state_dir {disk.path} is full" in done.stderr, done.stderr
    assert "ready: all loops ticking" in done.stderr, done.stderr
