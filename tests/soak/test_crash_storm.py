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
import contextlib
import gc
import logging
import re
import socket
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from agent.config.sections import AgentConfig
from agent.engine.histogram import HistogramSnapshot
from agent.engine.report import rss_mb
from agent.errors import ModelError
from agent.plugin.base import Plugin, PluginContext
from agent.plugin.registry import PluginRegistry
from agent.service.app import AgentApp
from agent.service.compose import build_agent
from agent.service.notify import Notifier
from sim.broker import Broker
from tests.support.soak import all_plugins_config

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
            time.sleep(0.001)


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


class _Lines(logging.Handler):
    """Counts formatted log lines (a traceback counts every line) and keeps the records."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        self.lines = 0
        self.keep = True
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines += self.format(record).count("\n") + 1
        if self.keep:
            self.records.append(record)

    @contextlib.contextmanager
    def alone(self) -> Iterator[None]:
        """Be the agent's only log handler, keeping nothing: pytest's capture handlers keep
        every record in memory, which must not count as the agent's growth."""
        logger = logging.getLogger("agent")
        handlers, propagate = logger.handlers[:], logger.propagate
        logger.handlers, logger.propagate, self.keep = [self], False, False
        try:
            yield
        finally:
            logger.handlers, logger.propagate, self.keep = handlers, propagate, True


@pytest.fixture
def lines() -> Iterator[_Lines]:
    """Everything the agent logs at INFO and above, as a production log would show it."""
    handler = _Lines()
    logger = logging.getLogger("agent")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


class _Systemd:
    """Reads the notify socket as systemd does (an unread socket would block the sender)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.pings = 0
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(path)
        self._sock.settimeout(0.1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data = self._sock.recv(4096)
            except TimeoutError:
                continue
            if b"WATCHDOG=1" in data.split(b"\n"):
                self.pings += 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join(1.0)
        self._sock.close()


@pytest.fixture
def systemd(tmp_path: Path) -> Iterator[_Systemd]:
    """A notify socket standing in for systemd's, counting WATCHDOG=1 pings."""
    fake = _Systemd(str(tmp_path / "notify.sock"))
    yield fake
    fake.close()


@pytest.fixture
def model_loads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The path of every model the agent loads from now on."""
    import agent.runtime.loader as loader

    loads: list[str] = []
    real = loader.load_model

    def counting(folder: Any, *args: Any, **kwargs: Any) -> Any:
        loads.append(str(folder))
        return real(folder, *args, **kwargs)

    monkeypatch.setattr(loader, "load_model", counting)
    return loads


class _Phase:
    """Loop figures of one phase: deadlines per second and tick-time p99 per plugin."""

    def __init__(self, app: AgentApp) -> None:
        self.app = app
        self.t0 = time.monotonic()
        self.stats0 = app.host.stats()
        self.hist0 = app.host.histograms()

    def end(self) -> dict[str, dict[str, float]]:
        elapsed = time.monotonic() - self.t0
        stats, hists = self.app.host.stats(), self.app.host.histograms()
        out = {}
        for name in HEALTHY:
            a, b = self.stats0[name], stats[name]
            deadlines = (b["ticks"] + b["skipped"]) - (a["ticks"] + a["skipped"])
            tick_a, tick_b = self.hist0[name][0], hists[name][0]
            window = HistogramSnapshot(tick_b.counts - tick_a.counts, tick_b.max_ns, 0)
            out[name] = {
                "deadline_hz": deadlines / elapsed,
                "tick_rate": (b["ticks"] - a["ticks"]) / elapsed,
                "tick_p50_us": window.percentile_ns(50.0) / 1e3,
                "tick_p99_us": window.percentile_ns(99.0) / 1e3,
                "ticks": float(window.count),
            }
        return out


def _wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_a_crash_storm_is_contained_visible_and_leak_free(
    broker: Broker,
    probe_factory: Callable[..., Any],
    unique_id: str,
    tmp_path: Path,
    lines: _Lines,
    systemd: _Systemd,
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
    app: AgentApp, probe: Any, base: str, lines: _Lines, model_loads: list[str], dog: _Systemd
) -> None:
    slot_model = app.host.model_slots()["storm"].model
    loads_before = len(model_loads)
    # --- calm: every plugin ticks, nothing crashes ------------------------------------------
    time.sleep(1.0)  # warm-up: caches, first telemetry, first metrics
    calm = _Phase(app)
    time.sleep(6.0)
    calm_figures = calm.end()

    # --- tick storm: the storm plugin crashes every third tick of every instance -----------
    lines_before, records_before = lines.lines, len(lines.records)
    pings_before, storm = dog.pings, _Phase(app)
    StormPlugin.crashing = True
    time.sleep(6.0)
    storm_figures = storm.end()
    storm_s = time.monotonic() - storm.t0
    pings = dog.pings - pings_before
    info = _info(app, "storm")
    storm_lines = lines.lines - lines_before
    records = lines.records[records_before:]

    print("\ncalm ", _fmt(calm_figures))
    print("storm", _fmt(storm_figures))
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

    crashes, restarts = info["crashes"], info["restarts"]
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

    # --- setup storm: the plugin cannot come back (its model file is gone) -------------------
    before = _info(app, "storm")
    records_before, lines_before = len(lines.records), lines.lines
    pings_before, phase = dog.pings, _Phase(app)
    StormPlugin.setup_fails = True
    time.sleep(4.0)
    figures = phase.end()
    setup_s = time.monotonic() - phase.t0
    info = _info(app, "storm")
    records = lines.records[records_before:]
    failures = info["crashes"] - before["crashes"]
    setup_lines = lines.lines - lines_before
    print("setup storm", _fmt(figures))
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
    time.sleep(5 * WATCHDOG_PERIOD_S)
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


def _fmt(figures: dict[str, dict[str, float]]) -> str:
    return "  ".join(
        f"{n}: {f['deadline_hz']:.1f} Hz tick p50 {f['tick_p50_us']:.1f} "
        f"p99 {f['tick_p99_us']:.1f} us"
        for n, f in figures.items()
    )
