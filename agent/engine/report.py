"""Plain-data views of the engine for people: one row per plugin, process start-up age and RSS."""

from __future__ import annotations

import os
import time
from typing import Any

from agent.engine.api import EngineControl


def plugin_rows(control: EngineControl) -> list[dict[str, Any]]:
    """Per plugin: state, rate, ticks, p99 tick time and lateness (us), overruns, restarts."""
    stats = control.stats()
    rows = []
    for info in control.plugins():
        st = stats.get(info["name"], {})
        rows.append(
            {
                "plugin": info["name"],
                "state": info["state"],
                "rate_hz": info["rate_hz"],
                "ticks": info["ticks"],
                "tick_p50_us": st.get("tick_us", {}).get("p50", 0.0),
                "tick_p99_us": st.get("tick_us", {}).get("p99", 0.0),
                "late_p99_us": st.get("lateness_us", {}).get("p99", 0.0),
                "overruns": info["overruns"],
                "restarts": info["restarts"],
                "last_error": info["last_error"],
            }
        )
    return rows


def summary_line(row: dict[str, Any]) -> str:
    """`key=value` pairs of one plugin row, for log lines a machine can parse."""
    parts = [
        f"plugin={row['plugin']}",
        f"state={row['state']}",
        f"rate_hz={row['rate_hz']:g}",
        f"ticks={row['ticks']}",
        f"tick_p50_us={row['tick_p50_us']:g}",
        f"tick_p99_us={row['tick_p99_us']:g}",
        f"late_p99_us={row['late_p99_us']:g}",
        f"overruns={row['overruns']}",
        f"restarts={row['restarts']}",
    ]
    if row["last_error"]:
        parts.append(f"last_error={row['last_error']!r}")
    return " ".join(parts)


def process_age_s() -> float:
    """Seconds since this process started (from /proc, 10 ms resolution; 0.0 elsewhere)."""
    try:
        with open("/proc/self/stat", "rb") as f:
            stat = f.read()
        # Field 22 (starttime, in clock ticks since boot) counted after the ')' of the comm field.
        start_ticks = int(stat[stat.rindex(b")") + 2 :].split()[19])
        hz = os.sysconf("SC_CLK_TCK")
        return max(0.0, time.clock_gettime(time.CLOCK_BOOTTIME) - start_ticks / hz)
    except (OSError, ValueError, IndexError, AttributeError):
        return 0.0


def rss_mb(pid: int | str = "self") -> float:
    """Resident set size in MB (VmRSS) of a process; 0.0 when unknown."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except (OSError, ValueError):
        pass
    return 0.0
