"""Fault: a plugin crashing again and again, in its tick and then in its setup, for minutes.

The whole agent runs in-process (build_agent: the three real plugins on the simulated HAL, one
crashing plugin, MQTT sync to a private broker, the systemd watchdog on a private socket). What
an operator expects, in phases of one run:
- the healthy loops keep their rates, and their tick-time p99 stays near the calm phase's;
- restarts back off as configured (doubling, capped), and the storm shows over MQTT: state,
  restarts, crashes and last_error in `status` and `metrics`, `plugin_failed` events;
- the log grows by about one line per crash (one traceback per failure site and episode);
- hundreds of crash/restart cycles leak nothing (tracemalloc, RSS) and load no model again;
- a plugin failing in its setup is retried the same way;
- the watchdog keeps pinging through the storm (the supervisor handles it) but stops for a loop
  stuck in a tick (systemd must restart the process then).
"""

from __future__ import annotations

import bisect
import gc
import logging
import re
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from agent.config.sections import AgentConfig
from agent.engine.report import rss_mb
from agent.errors import ModelError
from agent.plugin.base import Plugin, PluginContext
from agent.plugin.registry import PluginRegistry
from agent.service.app import AgentApp
from agent.service.compose import build_agent
from agent.service.notify import Notifier
from sim.broker import Broker
from tests.support.soak import (
    LogLines,
    LoopPhase,
    NotifySocket,
    all_plugins_config,
    format_phase,
)
from tests.support.waiting import until

pytestmark = pytest.mark.soak

HEALTHY = ("smart_home", "energy", "robot")
RATES = {"smart_home": 10.0, "energy": 50.0, "robot": 500.0}
BACKOFF = (0.01, 0.04)
WATCHDOG_PERIOD_S = 0.2
MEMORY_CYCLES = 200


class StormPlugin(Plugin):
    """Runs a real model each tick; raises every `crash_every` ticks of an instance while
    `crashing`; its setup raises while `setup_fails`; its tick blocks while `hang` is set."""

    default_model = "waveform_classifier"
    default_rate_hz = 100.0
    crash_every = 3
    crashing = False
    setup_fails = False
    hang = False
    setups: ClassVar[list[float]] = []
    crashes: ClassVar[list[float]] = []

    def setup(self, ctx: PluginContext) -> None:
        """Keep the model slot; allocate a buffer big enough that a leaked instance shows."""
        type(self).setups.append(time.monotonic())
        if type(self).setup_fails:
            raise ModelError("model file missing", path="models/waveform_classifier/model.tflite")
        assert ctx.model is not None
        self.run = ctx.model.run
        self.scratch = np.zeros(16384, np.float32)  # 64 KB per instance
        self.n = 0

    def tick(self, now_ns: int) -> None:
        """Infer; crash or hang when told to."""
        self.run()
        self.n += 1
        cls = type(self)
        if cls.crashing and self.n % cls.crash_every == 0:
            cls.crashes.append(time.monotonic())
            raise RuntimeError(f"storm crash {len(cls.crashes)}")
        while cls.hang:
            time.sleep(0.001)  # the scenario: a tick stuck until the test lets go


def _config(broker: Broker, device_id: str, state_dir: Path) -> AgentConfig:
    return all_plugins_config(
        broker.port,
        device_id,
        state_dir,
        extra_plugins=[{"name": "storm", "rate_hz": 100}],
        scheduler={"metrics_s": 0.5, "telemetry_flush_s": 0.5},
        engine={"restart_backoff_s": BACKOFF[0], "restart_backoff_max_s": BACKOFF[1]},
        service={"watchdog": True},
    )


def _wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    assert until(predicate, timeout, 0.01), f"timed out waiting for {what}"


def test_a_crash_storm_is_contained_visible_and_leak_free(
    broker: Broker,
    probe_factory: Callable[..., Any],
    unique_id: str,
    tmp_path: Path,
    lines: LogLines,
    systemd: NotifySocket,
    model_loads: list[str],
) -> None:
    StormPlugin.setups, StormPlugin.crashes = [], []
    StormPlugin.crashing = StormPlugin.setup_fails = StormPlugin.hang = False
    config = _config(broker, unique_id, tmp_path / "state")
    notifier = Notifier(
        {"NOTIFY_SOCKET": systemd.path, "WATCHDOG_USEC": str(int(WATCHDOG_PERIOD_S * 2e6))}
    )
    app = build_agent(
        config, notifier=notifier, registry=PluginRegistry(extra={"storm": StormPlugin})
    )
    probe = probe_factory(broker)
    base = f"{config.mqtt.topic_root}/{unique_id}"
    probe.subscribe(f"{base}/#")
    app.start()
    try:
        assert app.wait_ready(20)
        _wait(lambda: app.sync.counters()["connected"] == 1.0, 10, "MQTT connection")
        _storm(app, probe, base, lines, model_loads, systemd)
    finally:
        StormPlugin.hang = False
        app.stop(timeout=3.0)


def _storm(
    app: AgentApp, probe: Any, base: str, lines: LogLines, model_loads: list[str], dog: NotifySocket
) -> None:
    """The phases of one run, in order; each checks what an operator would see then."""
    slot_model = app.host.model_slots()["storm"].model
    loads_before = len(model_loads)
    crashes, restarts = _tick_storm(app, probe, base, lines, dog)
    _storm_is_visible_over_mqtt(probe, base, crashes, restarts)
    _crash_cycles_leak_nothing(app, probe, lines, model_loads, loads_before, slot_model)
    _setup_storm(app, lines, dog, slot_model)
    _a_stuck_loop_stops_the_watchdog(app, lines, dog)


def _tick_storm(
    app: AgentApp, probe: Any, base: str, lines: LogLines, dog: NotifySocket
) -> tuple[int, int]:
    """Calm, then the storm plugin crashing every third tick: healthy loops unharmed, restarts
    backed off, the log short. The storm's crashes and restarts."""
    # --- calm: every plugin ticks, nothing crashes ------------------------------------------
    # Warmed up: every loop has ticked (caches), the first telemetry and metrics are out.
    assert until(lambda: all(app.host.stats()[n]["ticks"] >= 10 for n in HEALTHY), 30)
    assert probe.wait_for(lambda: probe.count(f"{base}/metrics") > 0, 20)
    assert probe.wait_for(lambda: probe.count(f"{base}/telemetry/+") > 0, 20)
    calm = LoopPhase(app, HEALTHY)
    time.sleep(6.0)  # the calm phase measured
    calm_figures = calm.end()

    # --- tick storm: the storm plugin crashes every third tick of every instance -----------
    lines_before, records_before = lines.lines, len(lines.records)
    pings_before, storm = dog.pings, LoopPhase(app, HEALTHY)
    StormPlugin.crashing = True
    time.sleep(6.0)  # the storm phase measured
    storm_figures = storm.end()
    storm_s = time.monotonic() - storm.t0
    pings = dog.pings - pings_before
    info = _info(app, "storm")
    storm_lines = lines.lines - lines_before
    records = lines.records[records_before:]

    print("\ncalm ", format_phase(calm_figures))
    print("storm", format_phase(storm_figures))
    _loops_unharmed(calm_figures, storm_figures)
    crashes, restarts = int(info["crashes"]), int(info["restarts"])
    _backed_off_and_logged_once(records, crashes, restarts, storm_s, storm_lines, pings)
    return crashes, restarts


def _loops_unharmed(
    calm_figures: dict[str, dict[str, float]], storm_figures: dict[str, dict[str, float]]
) -> None:
    """Healthy loops kept their deadline grid and their tick time through the storm."""
    for name in HEALTHY:
        c, s = calm_figures[name], storm_figures[name]
        print(
            f"{name}: deadline rate {s['deadline_hz'] / RATES[name]:.3f} of configured, "
            f"tick storm/calm p50 {s['tick_p50_us'] / c['tick_p50_us']:.2f} "
            f"p99 {s['tick_p99_us'] / c['tick_p99_us']:.2f}"
        )
        # Healthy loops keep their deadline grid and tick on it ...
        assert s["deadline_hz"] == pytest.approx(RATES[name], rel=0.05), name
        assert s["tick_rate"] >= 0.9 * RATES[name], name
    # ... and their tick time does not suffer. Only the 500 Hz loop has ticks enough in 6 s
    # for a stable p99 (3000; the 50 Hz one's p99 is its 3rd-worst tick, one preemption on a
    # loaded machine moves it 5x): the others are judged by their median.
    ratio = storm_figures["robot"]["tick_p99_us"] / calm_figures["robot"]["tick_p99_us"]
    assert ratio < 3.0, ratio
    for name in ("smart_home", "energy"):
        ratio = storm_figures[name]["tick_p50_us"] / calm_figures[name]["tick_p50_us"]
        assert ratio < 2.0, (name, ratio)


def _backed_off_and_logged_once(
    records: list[logging.LogRecord],
    crashes: int,
    restarts: int,
    storm_s: float,
    storm_lines: int,
    pings: int,
) -> None:
    """Restarts followed the backoff; about one log line per crash; the watchdog kept pinging."""
    print(
        f"storm {storm_s:.1f} s: {crashes} crashes, {restarts} restarts, "
        f"{storm_lines} log lines ({storm_lines / crashes:.2f} per crash), "
        f"{pings} watchdog pings of {storm_s / WATCHDOG_PERIOD_S:.0f} periods"
    )
    assert crashes >= 30 and restarts >= crashes - 1
    # Backoff as configured: doubling from restart_backoff_s, capped at restart_backoff_max_s.
    delays = [
        float(m.group(1))
        for r in records
        if (m := re.search(r"restarting in ([0-9.]+) s", r.getMessage()))
    ]
    assert delays == [min(BACKOFF[0] * 2**k, BACKOFF[1]) for k in range(len(delays))]
    assert delays[:4] == [0.01, 0.02, 0.04, 0.04]
    # Never restarted before its delay was over: crash k to the setup that follows it.
    gaps = []
    for crash in StormPlugin.crashes[: len(delays)]:
        k = bisect.bisect_right(StormPlugin.setups, crash)
        if k < len(StormPlugin.setups):
            gaps.append(StormPlugin.setups[k] - crash)
    assert len(gaps) >= len(delays) - 1
    assert all(g >= d for g, d in zip(gaps, delays, strict=False))
    # The log: about one line per crash, one traceback for the whole storm.
    assert sum(1 for r in records if r.exc_info) == 1
    assert storm_lines <= crashes + 40
    # The watchdog kept pinging: the supervisor has the crashing plugin in hand.
    assert pings >= 0.8 * storm_s / WATCHDOG_PERIOD_S
    assert not any("watchdog withheld" in r.getMessage() for r in records)


def _storm_is_visible_over_mqtt(probe: Any, base: str, crashes: int, restarts: int) -> None:
    """Status, metrics and plugin_failed events tell the storm."""
    # --- visible over MQTT: status, metrics, events -----------------------------------------
    status = probe.command(base, "status")
    assert status["ok"], status
    row = next(p for p in status["result"]["plugins"] if p["name"] == "storm")
    print("status:", {k: row[k] for k in ("state", "restarts", "crashes", "last_error")})
    assert row["crashes"] >= crashes and row["restarts"] >= restarts
    assert row["last_error"].startswith("RuntimeError: storm crash")
    # A restart follows its crash by the backoff delay: wait for a payload past both counts.
    metrics = probe.wait_payload(
        f"{base}/metrics",
        lambda p: (
            p["plugins"]["storm"]["crashes"] >= crashes
            and p["plugins"]["storm"]["restarts"] >= restarts
        ),
    )
    assert metrics["plugins"]["storm"]["restarts"] >= restarts
    events = probe.wait_payload(
        f"{base}/events/storm",
        lambda p: p["kind"] == "plugin_failed" and p["data"]["crashes"] >= 16,
    )
    failed = [p for p in probe.payloads(f"{base}/events/storm") if p["kind"] == "plugin_failed"]
    print("plugin_failed events:", [p["data"]["crashes"] for p in failed])
    assert [p["data"]["crashes"] for p in failed][:5] == [1, 2, 4, 8, 16]
    assert events["data"]["phase"] == "tick"


def _crash_cycles_leak_nothing(
    app: AgentApp,
    probe: Any,
    lines: LogLines,
    model_loads: list[str],
    loads_before: int,
    slot_model: Any,
) -> None:
    """Hundreds of crash/restart cycles: no leak, no model loaded again."""
    # --- hundreds of crash/restart cycles: no leak, no model loaded again --------------------
    # What only the test keeps growing is stopped first: the probe's message list, log records.
    probe.close()
    with lines.alone():
        mem = _memory_over_cycles(app, warmup=30, cycles=MEMORY_CYCLES)
    print(
        f"memory over {mem['cycles']} crash/restart cycles: traced {mem['traced'] / 1024:+.0f} KB "
        f"({mem['traced'] / mem['cycles']:+.0f} B/cycle), RSS {mem['rss_mb']:+.1f} MB; "
        f"models loaded during the storm: {len(model_loads) - loads_before}"
    )
    print("grew most:", *mem["top"], sep="\n  ")
    # A leaked instance alone holds 64 KB: MEMORY_CYCLES of them would be 12.5 MB.
    assert mem["traced"] < 1024 * 1024, mem["top"]
    assert mem["rss_mb"] < 8.0
    assert len(model_loads) == loads_before
    assert app.host.model_slots()["storm"].model is slot_model


def _setup_storm(app: AgentApp, lines: LogLines, dog: NotifySocket, slot_model: Any) -> None:
    """The plugin cannot come back (its model file is gone): retried the same way; then back."""
    # --- setup storm: the plugin cannot come back (its model file is gone) -------------------
    before = _info(app, "storm")
    records_before, lines_before = len(lines.records), lines.lines
    pings_before, phase = dog.pings, LoopPhase(app, HEALTHY)
    StormPlugin.setup_fails = True
    time.sleep(4.0)  # the setup-storm phase measured
    figures = phase.end()
    setup_s = time.monotonic() - phase.t0
    info = _info(app, "storm")
    records = lines.records[records_before:]
    failures = info["crashes"] - before["crashes"]
    setup_lines = lines.lines - lines_before
    print("setup storm", format_phase(figures))
    print(
        f"setup storm {setup_s:.1f} s: {failures} failures, restarts {before['restarts']} -> "
        f"{info['restarts']}, {setup_lines} log lines ({setup_lines / failures:.2f} per failure), "
        f"{dog.pings - pings_before} watchdog pings, last_error {info['last_error']!r}"
    )
    assert failures >= 20 and info["state"] == "backoff"
    assert info["restarts"] <= before["restarts"] + 1  # one setup may have begun before the flip
    assert "model file missing" in info["last_error"]
    assert setup_lines <= failures + 40
    assert sum(1 for r in records if r.exc_info) == 1  # a new failure site: its one traceback
    assert dog.pings - pings_before >= 0.8 * setup_s / WATCHDOG_PERIOD_S
    for name in HEALTHY:
        assert _info(app, name)["state"] == "running"
        assert figures[name]["deadline_hz"] == pytest.approx(RATES[name], rel=0.05), name
    # The model came back: the plugin recovers on its next try, with the same model.
    StormPlugin.setup_fails = StormPlugin.crashing = False
    _wait(lambda: _info(app, "storm")["state"] == "running", 10, "recovery")
    assert app.host.model_slots()["storm"].model is slot_model


def _a_stuck_loop_stops_the_watchdog(app: AgentApp, lines: LogLines, dog: NotifySocket) -> None:
    """A loop stuck in a tick is different: the watchdog stops pinging."""
    # --- a stuck loop is different: the watchdog stops pinging ------------------------------
    records_before = len(lines.records)
    StormPlugin.hang = True
    _wait(
        lambda: any(
            "watchdog withheld: loops not ticking: storm" in r.getMessage()
            for r in lines.records[records_before:]
        ),
        5,
        "the watchdog to notice the stuck loop",
    )
    pings_stuck = dog.pings
    time.sleep(5 * WATCHDOG_PERIOD_S)  # the scenario: five periods in which no ping may come
    assert dog.pings == pings_stuck
    StormPlugin.hang = False


def _memory_over_cycles(app: AgentApp, *, warmup: int, cycles: int) -> dict[str, Any]:
    """Growth of traced Python memory and of RSS (less tracemalloc's own) over `cycles` crash
    and restart cycles, after `warmup` cycles; `top`: the three sites that grew most."""

    def crashes() -> int:
        return int(_info(app, "storm")["crashes"])

    tracemalloc.start(12)
    try:
        start = crashes()
        _wait(lambda: crashes() >= start + warmup, 60, "warm-up")
        gc.collect()
        c0, snap0 = crashes(), tracemalloc.take_snapshot()
        traced0, own0, rss0 = tracemalloc.get_traced_memory()[0], _own(), rss_mb()
        _wait(lambda: crashes() >= c0 + cycles, 90, "crash/restart cycles")
        gc.collect()
        c1, snap1 = crashes(), tracemalloc.take_snapshot()
        traced1, own1, rss1 = tracemalloc.get_traced_memory()[0], _own(), rss_mb()
    finally:
        tracemalloc.stop()
    top = [str(st) for st in snap1.compare_to(snap0, "lineno")[:3]]
    return {
        "cycles": c1 - c0,
        "traced": traced1 - traced0,
        "rss_mb": (rss1 - rss0) - (own1 - own0),
        "top": top,
    }


def _own() -> float:
    """Memory tracemalloc uses for its own bookkeeping, in MB."""
    return tracemalloc.get_tracemalloc_memory() / 2**20


def _info(app: AgentApp, name: str) -> dict[str, Any]:
    return next(p for p in app.host.plugins() if p["name"] == name)
