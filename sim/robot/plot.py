"""Pictures of a robot evaluation: the paths among the obstacles, and the scores side by side."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sim.robot.eval import Episode

COLORS = {
    "baseline": "tab:red",
    "expert": "tab:green",
    "float": "tab:blue",
    "int8_tflite": "tab:purple",
    "int8_onnx": "tab:orange",
}
MARKERS = {"success": "o", "collision": "X", "timeout": "s"}


def plot_evaluation(
    by_variant: dict[str, list[Episode]],
    stats: dict[str, dict[str, float | None]],
    out_dir: Path,
) -> list[Path]:
    """Write robot_paths.png (first episodes) and robot_scores.png; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [_paths_figure(plt, by_variant, out_dir / "robot_paths.png")]
    paths.append(_scores_figure(plt, stats, out_dir / "robot_scores.png"))
    return paths


def _paths_figure(plt: Any, by_variant: dict[str, list[Episode]], path: Path) -> Path:
    first = next(iter(by_variant.values()))
    shown = min(6, len(first))
    cols = min(3, shown)
    rows = (shown + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 5 * rows), squeeze=False)
    for k in range(rows * cols):
        ax = axes[k // cols][k % cols]
        if k >= shown:
            ax.axis("off")
            continue
        _room(plt, ax, first[k])
        for name, episodes in by_variant.items():
            ep = episodes[k]
            xs = [p[0] for p in ep.path]
            ys = [p[1] for p in ep.path]
            color = COLORS.get(name, "black")
            ax.plot(xs, ys, "-", color=color, lw=1.4, alpha=0.85, label=f"{name}: {ep.outcome}")
            if xs:
                ax.plot(xs[-1], ys[-1], MARKERS.get(ep.outcome, "."), color=color, ms=7)
        ax.set_title(f"episode seed {first[k].seed}", fontsize=10)
        ax.legend(fontsize=7, loc="upper right", framealpha=0.8)
    fig.suptitle("Robot paths (start: black dot, goal: gold star; X collision, square timeout)")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def _room(plt: Any, ax: Any, ep: Episode) -> None:
    layout = ep.layout
    if layout is not None:
        ax.add_patch(plt.Rectangle((0, 0), layout.width, layout.height, fill=False, lw=2))
        for cx, cy, r in layout.circles:
            ax.add_patch(plt.Circle((cx, cy), r, color="0.45"))
        for x0, y0, x1, y1 in layout.boxes:
            ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, color="0.45"))
        ax.set_xlim(-0.2, layout.width + 0.2)
        ax.set_ylim(-0.2, layout.height + 0.2)
    ax.plot(*ep.start, "ko", ms=6)
    ax.plot(*ep.goal, "*", color="gold", mec="k", ms=16)
    ax.set_aspect("equal")


def _scores_figure(plt: Any, stats: dict[str, dict[str, float | None]], path: Path) -> Path:
    names = list(stats)
    colors = [COLORS.get(n, "black") for n in names]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.bar(names, [stats[n]["success_rate"] or 0.0 for n in names], color=colors)
    left.set_ylim(0, 1.05)
    left.set_title("success rate (goal reached, no collision)")
    right.bar(names, [stats[n]["mean_time_to_goal_s"] or 0.0 for n in names], color=colors)
    right.set_title("mean time to goal, successful episodes (s)")
    for ax in (left, right):
        ax.tick_params(axis="x", rotation=20)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
