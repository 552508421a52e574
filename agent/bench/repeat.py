"""`bench --repeat N`: every ratio as a median with its spread over N whole runs.

One run on a shared machine is an anecdote: the same tick moved by up to 2x between runs here
(docs/realtime.md). Each run measures the agent and its baselines afresh, so each ratio is paired
within its own run; the runs are then summarized per ratio as median, min and max, with the
values themselves kept, rather than as an interval whose shape N = 3-5 runs cannot support.
"""

from __future__ import annotations

import statistics
from typing import Any

PLUGIN_RATIOS = ("ratio_p50", "ratio_p50_paced", "lateness_p99_vs_floor", "overrun_pct")
"""Per-plugin figures that are ratios against a baseline of the same run (or a share)."""
REPORT_RATIOS = ("rss_ratio",)


def spread(values: list[float | None]) -> dict[str, Any]:
    """Median, min and max of the values that exist, and the values in run order."""
    present = [v for v in values if v is not None]
    if not present:
        return {"median": None, "min": None, "max": None, "values": values}
    return {
        "median": round(statistics.median(present), 3),
        "min": min(present),
        "max": max(present),
        "values": values,
    }


def summarize(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """The last run's report (but the first run's `ready_ms`: later runs start in a process that
    is long up), plus `repeat`: each ratio's spread over all runs."""
    plugins: dict[str, dict[str, Any]] = {}
    for name in [p["plugin"] for p in reports[-1]["plugins"]]:
        runs = [next(p for p in r["plugins"] if p["plugin"] == name) for r in reports]
        plugins[name] = {key: spread([run.get(key) for run in runs]) for key in PLUGIN_RATIOS}
    summary = {key: spread([r.get(key) for r in reports]) for key in REPORT_RATIOS}
    repeat = {"runs": len(reports), **summary, "plugins": plugins}
    return {**reports[-1], "ready_ms": reports[0]["ready_ms"], "repeat": repeat}
