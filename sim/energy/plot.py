"""Pictures of an energy evaluation: the power trace with faults and alarms, and the scores."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from sim.energy.world import HouseholdPower

KIND_COLORS = {
    "spike": "tab:red",
    "compressor_failure": "tab:purple",
    "standby_creep": "tab:orange",
}
ALARM_STYLE = {"baseline": ("x", "tab:gray"), "int8_tflite": ("v", "tab:green")}


def plot_evaluation(
    out_dir: Path,
    world: HouseholdPower,
    hours: float,
    alarms: dict[str, list[float]],
    summaries: dict[str, Any],
) -> list[str]:
    """Write trace.png (first household) and scores.png (every variant); return their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    rec = world.record(int(hours * 3600))
    t_h = np.arange(len(rec.mains)) / 3600.0
    fig, ax = plt.subplots(figsize=(16, 5))
    ax.plot(t_h, rec.mains / 1000.0, lw=0.4, color="tab:blue", label="mains")
    for f in world.faults_before(world.t):
        ax.axvspan(f.start / 3600, f.end / 3600, color=KIND_COLORS[f.kind], alpha=0.25, lw=0)
    for d in world.dropouts:
        ax.axvspan(d.start / 3600, d.end / 3600, color="black", alpha=0.15, lw=0)
    top = float(np.nanmax(rec.mains)) / 1000.0 if np.isfinite(rec.mains).any() else 1.0
    for row, (name, (marker, color)) in enumerate(ALARM_STYLE.items()):
        times = np.asarray(alarms.get(name, []), float) / 3600.0
        ax.scatter(times, np.full(len(times), top * (1.04 + 0.05 * row)), marker=marker,
                   color=color, label=f"{name} alarms", zorder=3)  # fmt: skip
    for kind, color in KIND_COLORS.items():
        ax.axvspan(0, 0, color=color, alpha=0.25, label=kind)
    ax.set_xlabel("hour of episode")
    ax.set_ylabel("kW")
    ax.set_title("Mains power, injected faults (shaded; grey: sensor dropouts) and alarms")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), fontsize=8, ncol=6)
    trace = out_dir / "energy_trace.png"
    fig.tight_layout()
    fig.savefig(trace, dpi=110)
    plt.close(fig)

    names = [n for n in summaries if isinstance(summaries[n], dict) and "f1" in summaries[n]]
    fig, ax = plt.subplots(figsize=(9, 4))
    width = 0.25
    for j, key in enumerate(("f1", "precision", "recall")):
        vals = [summaries[n][key] for n in names]
        ax.bar(np.arange(len(names)) + (j - 1) * width, vals, width, label=key)
    ax.set_xticks(np.arange(len(names)), names, fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_title("Event precision / recall / F1 per variant")
    ax.legend()
    scores = out_dir / "energy_scores.png"
    fig.tight_layout()
    fig.savefig(scores, dpi=110)
    plt.close(fig)
    return [str(trace), str(scores)]
