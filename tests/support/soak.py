"""What the in-process fault tests share: the all-plugins agent (generic-x86) against a broker,
a log-line counter, and a notify socket standing in for systemd's."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from agent.config import load_config
from agent.config.sections import AgentConfig
from agent.engine.histogram import HistogramSnapshot
from agent.service.app import AgentApp
from tests.support.sync import agent_config

REPO = Path(__file__).resolve().parents[2]
GENERIC = REPO / "firmware-configs" / "generic-x86.toml"


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
