"""Parts for the telemetry ring tests: a plugin that numbers its rows, a ring writer to run in
another process, and the checks both sides share."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import ClassVar

import numpy as np
import numpy.typing as npt
from pydantic import Field

from agent.config.sections import AgentConfig
from agent.engine.host import PluginHost
from agent.engine.isolate_ring import RowsBlock, TelemetryRing
from agent.hal.router import Hal
from agent.plugin.base import Plugin, PluginContext, PluginParams
from agent.plugin.registry import PluginRegistry
from tests.support import engine as kit

N, PID, PERF = 0, 1, 2
"""Columns of a RowsPlugin row: its number, the child's pid, the tick's perf_counter_ns; every
further column repeats the number, so a row mixing two writes shows."""
FIELDS = ("n", "pid", "perf_ns", *(f"n{i}" for i in range(29)))


class RowsParams(PluginParams):
    """Params of RowsPlugin."""

    kill_at: int = Field(0, ge=0, description="SIGKILL itself right after row n (0: never)")
    flag: str = Field("", description="Kill only while this file does not exist (made first)")


class RowsPlugin(Plugin):
    """Emits one numbered row per tick (a fresh instance counts from 1 again); with `kill_at`,
    dies of SIGKILL right after that row, the way the OOM killer would end it."""

    Params = RowsParams
    telemetry_fields: ClassVar[tuple[str, ...]] = FIELDS
    default_rate_hz = 500.0

    def setup(self, ctx: PluginContext) -> None:
        """Keep the channel; allocate the row."""
        self.p: RowsParams = ctx.params  # type: ignore[assignment]
        self.emit = ctx.out.telemetry
        self.row = np.zeros(len(FIELDS), np.float64)
        self.pid = os.getpid()
        self.n = 0

    def tick(self, now_ns: int) -> None:
        """Emit row n; die after it if asked."""
        self.n += 1
        row = self.row
        row.fill(self.n)
        row[PID] = self.pid
        row[PERF] = now_ns  # exact in float64 below 2**53 ns (104 days of uptime)
        self.emit(now_ns, row)
        if self.n == self.p.kill_at:
            flag = Path(self.p.flag) if self.p.flag else None
            if flag is None or not flag.exists():
                if flag is not None:
                    flag.touch()
                os.kill(self.pid, signal.SIGKILL)


PLUGINS: dict[str, type[Plugin]] = {**kit.PLUGINS, "rows": RowsPlugin, "rows2": RowsPlugin}


def make_host(config: AgentConfig) -> PluginHost:
    """A host over the engine test plugins and RowsPlugin (as `rows` and `rows2`)."""
    hal = Hal(config.hal)
    hal.start()
    return PluginHost(
        config,
        hal=hal,
        registry=PluginRegistry(extra=PLUGINS),
        load_model=kit.load_model_by_name,
        supervise_interval_s=0.01,
    )


def write_rows(name: str, kind: type[TelemetryRing], start: int, count: int | None) -> None:
    """In a child process: put rows start, start+1, ... (each value and the stamp the row's
    number) into the ring `name`, waiting for room, `count` of them or until killed."""
    ring = RowsBlock.attach(name, kind=kind).ring
    row = np.zeros(ring.fields, np.float64)
    k = start
    while count is None or k < start + count:
        row.fill(k)
        while ring.pending >= ring.capacity:
            pass
        ring.put(k, row)
        k += 1


def whole_rows(rows: npt.NDArray[np.float64], skip: tuple[int, ...] = ()) -> bool:
    """True if every row holds one number in every column but `skip`: none mixes two writes."""
    keep = [c for c in range(rows.shape[1]) if c not in skip]
    values = rows[:, keep]
    return bool((values == values[:, :1]).all())


def counts_up(numbers: npt.NDArray[np.float64], first: int = 1) -> bool:
    """True if `numbers` are first, first+1, ... with none missing or repeated."""
    return bool(np.array_equal(numbers, np.arange(first, first + len(numbers))))


def shm_mapped(pid: int) -> set[str]:
    """Names of the /dev/shm blocks process `pid` has mapped and that still exist (none once
    the process is gone)."""
    try:
        maps = Path(f"/proc/{pid}/maps").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return set()
    names = set()
    for line in maps.splitlines():
        path = line.split(maxsplit=5)[-1]
        if path.startswith("/dev/shm/") and Path(path).exists():
            names.add(path.removeprefix("/dev/shm/"))
    return names
