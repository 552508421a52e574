"""`bench --isolate PLUGIN`: a plugin's tick in a child process beside its tick in process.

The agent runs with the plugin in process (the main agent phase), then with the plugin isolated
and everything else unchanged; with `rounds` > 1 the two alternate that many times and the
figures are medians, because on a shared machine the same tick moves by up to 2x from one run
to the next (docs/realtime.md, "A process per plugin").
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

from agent.config.sections import AgentConfig
from agent.errors import EdgeAgentError

Phase = Callable[[AgentConfig], dict[str, Any]]
"""Runs the agent with a config for the phase's duration; returns the phase's figures."""


def with_isolation(config: AgentConfig, names: list[str], isolate: bool) -> AgentConfig:
    """`config` with `isolate` set as given on the plugins named; EdgeAgentError if one is not
    configured."""
    if not names:
        return config
    unknown = set(names) - {pc.name for pc in config.plugins}
    if unknown:
        raise EdgeAgentError(f"bench --isolate: no plugin {', '.join(sorted(unknown))} configured")
    plugins = [
        pc.model_copy(update={"isolate": isolate}) if pc.name in names else pc
        for pc in config.plugins
    ]
    return config.model_copy(update={"plugins": plugins})


def compare_isolated(
    config: AgentConfig,
    names: list[str],
    *,
    first: dict[str, Any],
    rounds: int,
    run: Phase,
    say: Callable[[str], None],
) -> dict[str, dict[str, Any]]:
    """Per plugin in `names`: its isolated figures (`isolated_report`). `first` is the main
    agent phase (the plugins in process); `run` runs one more phase."""
    if not names:
        return {}
    in_process = [first]
    isolated = []
    for r in range(rounds):
        if r:
            say(f"round {r + 1} of {rounds}: the agent again, all in process")
            in_process.append(run(with_isolation(config, names, False)))
        say(f"round {r + 1} of {rounds}: the agent again, {', '.join(names)} in a child process")
        isolated.append(run(with_isolation(config, names, True)))
    return {name: isolated_report(name, in_process, isolated) for name in names}


def isolated_report(
    name: str, in_process: list[dict[str, Any]], isolated: list[dict[str, Any]]
) -> dict[str, Any]:
    """The plugin's tick and lateness in a child process (medians over the rounds), its tick in
    process in the same rounds, and `ratio_p50`: isolated tick p50 over in-process tick p50
    (the issue's goal is <= 1.3)."""
    iso = [phase["stats"][name] for phase in isolated]
    ins = [phase["stats"][name] for phase in in_process]
    ticks = sum(s["ticks"] for s in iso)
    overruns = sum(s["overruns"] for s in iso)
    tick_p50, in_p50 = _median(iso, "tick_us", "p50"), _median(ins, "tick_us", "p50")
    return {
        "rounds": len(iso),
        "tick_us": {"p50": tick_p50, "p99": _median(iso, "tick_us", "p99")},
        "lateness_us": {
            "p50": _median(iso, "lateness_us", "p50"),
            "p99": _median(iso, "lateness_us", "p99"),
            "max": max(s["lateness_us"]["max"] for s in iso),
        },
        "ticks": ticks,
        "overruns": overruns,
        "overrun_pct": round(100.0 * overruns / max(ticks, 1), 3),
        "in_process_tick_us": {"p50": in_p50, "p99": _median(ins, "tick_us", "p99")},
        "ratio_p50": round(tick_p50 / in_p50, 2) if in_p50 > 0 else None,
        "per_round_p50_us": [
            [i["tick_us"]["p50"], s["tick_us"]["p50"]] for i, s in zip(ins, iso, strict=True)
        ],
        "child_rss_mb": max((p["child_rss_mb"].get(name) or 0.0) for p in isolated),
        "host_rss_mb": round(max(p["rss_mb"] for p in isolated), 1),
    }


def _median(stats: list[dict[str, Any]], figure: str, quantile: str) -> float:
    return round(float(statistics.median(s[figure][quantile] for s in stats)), 2)
