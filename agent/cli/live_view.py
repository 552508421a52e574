"""The live view of `edge-agent run` on a terminal: a header (device, broker, outbox), one row
per plugin with its model and accelerator, and the last events.

Imported only when stdout is a terminal: rich costs memory a service never needs. While the
view runs, log records are printed through its console, above the view: a line written behind
rich's back would shift the screen and leave a stale copy of the view above the new one.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from agent.engine.report import plugin_rows
from agent.events import Event

EVENT_ROWS = 8


def run_live_view(app: Any, stop: threading.Event, step: Callable[[], bool]) -> None:
    """Redraw four times a second until `stop` is set or `step()` (reloads, the end of a
    --duration) returns False."""
    live = Live(render(app), refresh_per_second=4, transient=False)
    with live, _logs_through(live.console):
        while not stop.wait(0.25):
            if not step():
                break
            live.update(render(app))


def render(app: Any) -> RenderableType:
    """The whole view: header, plugin table, last events."""
    return Group(header(app), plugin_table(app), events_table(recent_events(app)))


def header(app: Any) -> Text:
    """Device, broker link, outbox depth and uptime, on one line."""
    text = Text(f"edge-agent {app.config.device.id}", style="bold")
    mqtt = app.config.mqtt
    sync = getattr(app, "sync", None)
    if sync is None:
        text.append("   mqtt off", style="dim")
    else:
        counters = sync.counters()
        up = bool(counters.get("connected"))
        state = "connected to" if up else "DOWN, retrying"
        text.append(f"   mqtt {state} {mqtt.host}:{mqtt.port}", style="green" if up else "red")
        depth = int(counters.get("outbox_depth", 0))
        failing = bool(counters.get("outbox_failing"))
        text.append(f"   outbox {depth} msgs" + (" (writes failing)" if failing else ""))
        if failing:
            text.stylize("red", len(text) - len(" (writes failing)"))
    started = getattr(app, "started_at", None)
    if started is not None:
        text.append(f"   up {_duration(time.monotonic() - started)}", style="dim")
    return text


def plugin_table(app: Any) -> Table:
    """One row per plugin: state, model and its accelerator, rate, tick time and lateness."""
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for name in ("plugin", "state", "model", "accel"):
        table.add_column(name, no_wrap=True)
    heads = (
        "Hz",
        "ticks",
        "tick p50\nus",
        "tick p99\nus",
        "late p99\nus",
        "over-\nruns",
        "re-\nstarts",
    )
    for name in heads:
        table.add_column(name, justify="right", no_wrap=True)
    models = {
        name: (slot.model.name, slot.model.accelerator)
        for name, slot in app.host.model_slots().items()
    }
    for row in plugin_rows(app.host):
        model, accel = models.get(row["plugin"], ("-", "-"))
        table.add_row(
            row["plugin"],
            row["state"],
            model,
            accel,
            f"{row['rate_hz']:g}",
            str(row["ticks"]),
            f"{row['tick_p50_us']:.1f}",
            f"{row['tick_p99_us']:.0f}",
            f"{row['late_p99_us']:.0f}",
            str(row["overruns"]),
            str(row["restarts"]),
            style="red" if row["state"] != "running" else None,
        )
    return table


def recent_events(app: Any, limit: int = EVENT_ROWS) -> list[Event]:
    """The last events of every plugin, oldest first. Without MQTT nobody else drains the
    event rings, so the view does (it is then their one consumer)."""
    channels = app.host.channels()
    for channel in channels:
        if channel.recent is None:
            channel.recent = deque(maxlen=16)
    if getattr(app, "sync", None) is None:
        for channel in channels:
            channel.drain_events()
    events = [ev for channel in channels for ev in list(channel.recent or ())]
    events.sort(key=lambda ev: ev.ts_ns)
    return events[-limit:]


def events_table(events: list[Event]) -> Table:
    """The last events: local time, plugin, kind, score and data."""
    table = Table(title="last events", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("time", no_wrap=True)
    table.add_column("plugin", no_wrap=True)
    table.add_column("event", no_wrap=True)
    table.add_column("score", justify="right", no_wrap=True)
    table.add_column("data", overflow="ellipsis", no_wrap=True, max_width=60)
    if not events:
        table.add_row("-", "", "none yet", "", "")
    for ev in events:
        table.add_row(
            time.strftime("%H:%M:%S", time.localtime(ev.ts_ns / 1e9)),
            ev.plugin,
            ev.kind,
            f"{ev.score:.2f}",
            " ".join(f"{k}={_short(v)}" for k, v in ev.data.items()),
        )
    return table


def _short(value: object) -> str:
    """A data value in a few characters: floats to 4 significant digits."""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, str):
        return value
    return json.dumps(value, default=str, separators=(",", ":"))


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


class _ConsoleHandler(logging.Handler):
    """Prints records through a rich console, which puts them above the live view."""

    def __init__(self, console: Console, formatter: logging.Formatter | None) -> None:
        super().__init__()
        self._console = console
        self.setFormatter(formatter or logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        """Print one formatted record."""
        try:
            line = self.format(record)
            # Wrapped by rich, not by the terminal: rich then knows how many rows it wrote.
            self._console.print(line, markup=False, highlight=False, overflow="fold")
        except Exception:  # a logging handler never raises into the caller
            self.handleError(record)


@contextmanager
def _logs_through(console: Console) -> Iterator[None]:
    root = logging.getLogger()
    saved = root.handlers[:]
    formatter = saved[0].formatter if saved else None
    root.handlers[:] = [_ConsoleHandler(console, formatter)]
    try:
        yield
    finally:
        root.handlers[:] = saved
