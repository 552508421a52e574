"""Closed-loop evaluation of the robot policy: the real plugin, runtime and HAL on seeded rooms.

Every variant drives the same held-out episodes (seeds 10_000 and up; training used seeds below
10_000) through the real `RobotPlugin`, its safety layer and the sim HAL:
- baseline: turn to the goal and drive straight at it (sim/robot/expert.py `naive_wheels`);
- expert: the analytic free-space follower the policy was distilled from (re-planning at the
  lidar's 100 Hz, holding its action between scans: it costs ~0.1 ms a call);
- float: the unquantized network (models/robot_policy/eval/float.onnx, ONNX Runtime);
- int8_tflite, int8_onnx: the shipped int8 files, loaded by `agent.runtime.loader`.
Main metric: success rate (goal reached with no collision within the time limit, and without
standing still for 5 s). Time to goal and the rest go under "extra".
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from agent.runtime.base import Model
from sim.compare import compare, mean_of
from sim.harness import run_lockstep
from sim.robot.controllers import expert_model, naive_model
from sim.robot.geometry import Layout
from sim.robot.world import RobotWorld

EVAL_SEED = 10_000
RATE_HZ = 500.0
DEFAULT_EPISODES = 30
MODEL_DIR = Path(__file__).resolve().parents[2] / "models" / "robot_policy"
#: Realistic settings: sensor noise and motor spread stay, scripted demo situations go.
EVAL_WORLD: dict[str, Any] = {
    "auto_restart": False,
    "popup_interval_s": 0.0,
    "dropout_interval_s": 0.0,
}
#: The expert re-plans at the lidar's 100 Hz and holds its action between (it costs ~0.1 ms).
EXPERT_HOLD = 5
_CHUNK_S = 0.5  # lockstep runs this long between checks for the end of an episode
_PATH_EVERY = 25  # ticks between recorded positions (20 Hz at 500 Hz)


@dataclass
class Episode:
    """What one episode of one variant came to."""

    seed: int
    outcome: str
    time_s: float
    path_length: float
    straight_distance: float
    estops: int
    layout: Layout | None = None
    start: tuple[float, float] = (0.0, 0.0)
    goal: tuple[float, float] = (0.0, 0.0)
    path: list[tuple[float, float]] = field(default_factory=list)

    @property
    def success(self) -> bool:
        """Goal reached without a collision."""
        return self.outcome == "success"


def run_episode(
    model: Model,
    seed: int,
    *,
    world: dict[str, Any] | None = None,
    params: dict[str, Any] | None = None,
    record: bool = False,
) -> Episode:
    """Drive one seeded episode to its outcome with `model` in the real plugin."""
    from plugins.robot import RobotPlugin

    sim = RobotWorld(**(EVAL_WORLD if world is None else world))
    sim.reset(seed)
    x, y, _ = sim.pose
    ep = Episode(seed, "", 0.0, 0.0, sim.straight_distance, 0, start=(x, y), goal=sim.goal_xy)
    if record:
        ep.layout = sim.layout
        ep.path.append((x, y))

    ticks = 0

    def on_tick(s: Any, _now_ns: int) -> None:
        nonlocal ticks
        ticks += 1
        if record and ticks % _PATH_EVERY == 0 and not s.done:
            px, py, _ = s.pose
            ep.path.append((px, py))

    plugin = RobotPlugin()
    while not sim.done:
        result = run_lockstep(
            plugin,
            sim,
            duration_s=_CHUNK_S,
            rate_hz=RATE_HZ,
            params=params,
            model=model,
            on_tick=on_tick if record else None,
        )
        ep.estops += sum(1 for e in result.events if e.kind == "estop")
    if record:
        ep.path.append(sim.pose[:2])
    ep.outcome = sim.outcome
    ep.time_s = sim.episode_time
    ep.path_length = sim.path_length
    return ep


def run_episodes(
    model: Model, seeds: Iterable[int], *, record: bool = False, **kwargs: Any
) -> list[Episode]:
    """`run_episode` over each seed, in order."""
    return [run_episode(model, s, record=record, **kwargs) for s in seeds]


def summarize(episodes: list[Episode]) -> dict[str, float | None]:
    """Success, collision and timeout rates, mean time to goal and e-stops per episode."""
    n = max(1, len(episodes))
    wins = [e for e in episodes if e.success]
    return {
        "success_rate": len(wins) / n,
        "collision_rate": sum(e.outcome == "collision" for e in episodes) / n,
        "timeout_rate": sum(e.outcome == "timeout" for e in episodes) / n,
        "mean_time_to_goal_s": float(np.mean([e.time_s for e in wins])) if wins else None,
        "estops_per_episode": sum(e.estops for e in episodes) / n,
    }


def variants(model_dir: Path = MODEL_DIR) -> dict[str, Model]:
    """Every controller the evaluation compares, loaded and ready."""
    from agent.config.sections import RuntimeConfig
    from agent.runtime.loader import load_model
    from agent.runtime.onnx import OnnxModel

    return {
        "baseline": naive_model(),
        "expert": expert_model(hold=EXPERT_HOLD),
        "float": OnnxModel(model_dir / "eval" / "float.onnx", name="robot_policy", version="float"),
        "int8_tflite": load_model(model_dir, RuntimeConfig(), fmt="tflite"),
        "int8_onnx": load_model(model_dir, RuntimeConfig(), fmt="onnx"),
    }


def evaluate(
    *,
    episodes: int = DEFAULT_EPISODES,
    seed: int = EVAL_SEED,
    plot_dir: Path | None = None,
    quick: bool = False,
) -> dict[str, Any]:
    """Success rate of every variant over the same `episodes` held-out episodes from `seed`."""
    if episodes < 1:
        raise ValueError(f"episodes must be at least 1 (got {episodes})")
    if quick:
        episodes = min(episodes, 2)
    seeds = range(seed, seed + episodes)
    models = variants()
    by_variant: dict[str, list[Episode]] = {}
    try:
        for name, model in models.items():
            by_variant[name] = run_episodes(model, seeds, record=plot_dir is not None)
    finally:
        for model in models.values():
            model.close()
    stats = {name: summarize(eps) for name, eps in by_variant.items()}
    results = {name: s["success_rate"] for name, s in stats.items()}
    extra: dict[str, Any] = {
        key: {name: s[key] for name, s in stats.items()}
        for key in next(iter(stats.values()))
        if key != "success_rate"
    }
    extra["time_to_goal_common_s"] = _common_time_to_goal(by_variant)
    extra["student_over_expert"] = _ratio(results["int8_tflite"], results["expert"])
    extra["int8_tflite_over_float"] = _ratio(results["int8_tflite"], results["float"])
    extra["int8_onnx_over_float"] = _ratio(results["int8_onnx"], results["float"])
    extra["per_episode"] = {n: [int(e.success) for e in eps] for n, eps in by_variant.items()}
    if plot_dir is not None:
        from sim.robot.plot import plot_evaluation

        extra["plots"] = [str(p) for p in plot_evaluation(by_variant, stats, Path(plot_dir))]
    return {
        "domain": "robot",
        "metric": "success_rate",
        "higher_is_better": True,
        "results": results,
        "compare": compare(
            {n: mean_of([e.success for e in eps]) for n, eps in by_variant.items()},
            {n: [e.seed for e in eps] for n, eps in by_variant.items()},
            metric="success_rate",
            higher_is_better=True,
        ),
        "episodes": episodes,
        "seed": seed,
        "extra": extra,
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _common_time_to_goal(by_variant: dict[str, list[Episode]]) -> dict[str, float]:
    """Mean time to goal over the episodes every non-baseline variant solved (a fair race)."""
    names = [n for n in by_variant if n != "baseline"]
    common = [
        i for i in range(len(by_variant[names[0]])) if all(by_variant[n][i].success for n in names)
    ]
    if not common:
        return {}
    return {
        n: float(np.mean([by_variant[n][i].time_s for i in common]))
        for n in by_variant
        if all(by_variant[n][i].success for i in common)
    }
