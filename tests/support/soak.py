"""What the in-process fault tests share: the all-plugins agent (generic-x86) against a broker,
a log-line counter, a notify socket standing in for systemd's, the figures of a phase of a
run, and a QoS 1 backend subscriber that can stop acknowledging."""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import socket
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from agent.config import load_config
from agent.config.sections import AgentConfig
from agent.engine.histogram import HistogramSnapshot
from agent.engine.report import rss_mb
from agent.service.app import AgentApp
from tests.support.sync import agent_config

REPO = Path(__file__).resolve().parents[2]
GENERIC = REPO / "firmware-configs" / "generic-x86.toml"
SAMPLE_S = 0.25
SLOW_CONSUMER_KEEPALIVE_S = 30
"""The default keepalive; the slow-consumer pause stays under it, so the connection stays up."""


def all_plugins_config(
    port: int,
    device_id: str,
    state_dir: Path,
    *,
    extra_plugins: Iterable[dict[str, Any]] = (),
    **sections: Any,
) -> AgentConfig:
    """generic-x86's plugins (smart_home 10 Hz, energy 50 Hz, robot 500 Hz), models, runtime and
    simulated HAL, syncing to 127.0.0.1:`port` with the test defaults of `agent_config`; extra
    plugins appended, the given sections merged in."""
    generic = load_config(GENERIC, env={})
    plugins = [p.model_dump() for p in generic.plugins] + list(extra_plugins)
    config: AgentConfig = agent_config(
        port,
        device_id,
        state_dir,
        models_dir=generic.models_dir,
        runtime=generic.runtime.model_dump(),
        hal=generic.hal.model_dump(),
        plugins=plugins,
        **sections,
    )
    return config


class LogLines(logging.Handler):
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


class NotifySocket:
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


class LoopPhase:
    """Loop figures of one phase of a run: deadlines per second and tick-time percentiles per
    plugin in `names`, from the host's counters and histograms."""

    def __init__(self, app: AgentApp, names: Iterable[str]) -> None:
        self.app = app
        self.names = tuple(names)
        self.t0 = time.monotonic()
        self.stats0 = app.host.stats()
        self.hist0 = app.host.histograms()

    def end(self) -> dict[str, dict[str, float]]:
        """The figures from the start of the phase to now."""
        elapsed = time.monotonic() - self.t0
        stats, hists = self.app.host.stats(), self.app.host.histograms()
        out = {}
        for name in self.names:
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


def format_phase(figures: dict[str, dict[str, float]]) -> str:
    """One line of the figures of a phase."""
    return "  ".join(
        f"{n}: {f['deadline_hz']:.1f} Hz tick p50 {f['tick_p50_us']:.1f} "
        f"p99 {f['tick_p99_us']:.1f} us"
        for n, f in figures.items()
    )


class Window:
    """Loop ticks and sync counters at the start of a phase; `close()` gives its figures."""

    def __init__(self, app: AgentApp) -> None:
        self.app = app
        self.t0 = time.monotonic()
        self.ticks = dict(app.host.tick_counters())
        assert app.sync is not None
        self.counters = app.sync.counters()

    def close(self) -> dict[str, Any]:
        """Seconds, tick ratio per loop (ticks over rate x seconds), sync counter deltas."""
        dt = time.monotonic() - self.t0
        ticks = self.app.host.tick_counters()
        rates = {p.name: p.rate_hz for p in self.app.config.plugins}
        assert self.app.sync is not None
        counters = self.app.sync.counters()
        return {
            "seconds": round(dt, 2),
            "tick_ratio": {
                n: round((ticks[n] - self.ticks[n]) / (rates[n] * dt), 4) for n in sorted(rates)
            },
            "acked": counters["outbox_acked"] - self.counters["outbox_acked"],
            "acked_per_s": round(
                (counters["outbox_acked"] - self.counters["outbox_acked"]) / dt, 2
            ),
        }


class Sampler:
    """Samples sync counters and RSS every `SAMPLE_S` on its own thread; keeps the maxima."""

    def __init__(self, app: AgentApp) -> None:
        self.app = app
        self.max: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_S):
            self.sample()

    def sample(self) -> None:
        """Take one sample now."""
        assert self.app.sync is not None
        c = self.app.sync.counters()
        values = {
            "outbox_bytes": c["outbox_bytes"],
            "outbox_depth": c["outbox_depth"],
            "outbox_inflight": c["outbox_inflight"],
            "events_backlog": c["events_backlog"],
            "durable_backlog": c["durable_backlog"],
            "rss_mb": rss_mb(),
        }
        for key, value in values.items():
            self.max[key] = max(self.max.get(key, value), value)

    def stop(self) -> dict[str, float]:
        """Stop sampling; the maxima."""
        self._stop.set()
        self._thread.join(2.0)
        self.sample()
        return {k: round(v, 1) for k, v in self.max.items()}


def events_by_plugin(payloads: list[Any]) -> dict[str, list[int]]:
    """Seq numbers received per plugin, each once (a QoS 1 redelivery counted once), sorted."""
    seqs: dict[str, set[int]] = {}
    for p in payloads:
        if isinstance(p, dict) and "seq" in p:
            seqs.setdefault(p["plugin"], set()).add(p["seq"])
    return {name: sorted(s) for name, s in seqs.items()}


def assert_contiguous(seqs: dict[str, list[int]], *, from_first: bool = False) -> None:
    """Every plugin's seqs run 1..n with no gap (a fresh state_dir starts at 1), or from the
    first one received (a subscriber that came later)."""
    for plugin, got in seqs.items():
        first = got[0] if from_first else 1
        assert got == list(range(first, first + len(got))), f"{plugin}: gaps in seq {got}"


def telemetry_gaps(batches: list[Any]) -> tuple[int, int]:
    """(batches missing between the ones received, length of the unbroken run at the end).

    A batch is identified by its first row's time. Consecutive batches are one period apart:
    the flush period, or longer for a plugin that emits a row less often than it is flushed
    (energy: one row per 1.2 s window); the median spacing is that period.
    """
    starts = sorted({round(b["ts"][0], 3) for b in batches if b.get("ts")})
    pairs = list(itertools.pairwise(starts))
    period_s = sorted(b - a for a, b in pairs)[len(pairs) // 2]
    missing, run = 0, 1
    for a, b in pairs:
        skipped = round((b - a) / period_s) - 1
        if skipped > 0:
            missing += skipped
            run = 1
        else:
            run += 1
    return missing, run


class Backend:
    """A QoS 1 subscriber that can stop acknowledging: it still reads, but sends no PUBACK, so
    the broker stops at its in-flight limit and queues the rest for it."""

    def __init__(self, host: str, port: int, filters: list[str], *, manual_ack: bool) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.payloads: list[dict[str, Any]] = []
        self.withheld: list[int] = []
        self.acking = not manual_ack
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"backend-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv311,
            clean_session=True,
            manual_ack=manual_ack,
        )
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        # A long keepalive: the broker must keep the session (and its queue) while we stall.
        self.client.connect(host, port, keepalive=600)
        self.client.loop_start()
        self.client.subscribe([(f, 1) for f in filters])
        assert self._subscribed.wait(10), "backend subscriber got no SUBACK"

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        with self._lock:
            self.payloads.append(json.loads(msg.payload))
            if self.acking:
                client.ack(msg.mid, msg.qos)
            else:
                self.withheld.append(msg.mid)

    def release(self) -> None:
        """Acknowledge what was withheld and everything from now on."""
        with self._lock:
            self.acking = True
            withheld, self.withheld = self.withheld, []
        for mid in withheld:
            self.client.ack(mid, 1)

    def events(self) -> dict[str, list[int]]:
        """Seqs received per plugin."""
        with self._lock:
            return events_by_plugin(list(self.payloads))

    def close(self) -> None:
        """Disconnect."""
        self.client.disconnect()
        self.client.loop_stop()


def slow_consumer_config(
    port: int, device_id: str, state_dir: Path, **sections: Any
) -> AgentConfig:
    """All plugins against `port`, with QoS 1 telemetry (so it goes through the outbox) and
    the given sections merged in."""
    mqtt = {"telemetry_qos": 1, "keepalive": SLOW_CONSUMER_KEEPALIVE_S, **sections.pop("mqtt", {})}
    scheduler = {
        "telemetry_flush_s": 1.0,
        "metrics_s": 10.0,
        "state_s": 300.0,
        "outbox_compaction_s": 600.0,
        **sections.pop("scheduler", {}),
    }
    return all_plugins_config(
        port, device_id, state_dir, mqtt=mqtt, scheduler=scheduler, **sections
    )
