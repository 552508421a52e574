"""Closed-loop evaluation: the real energy plugin, runtime and sim HAL against held-out houses.

Each variant (threshold baseline, float network, int8 TFLite, int8 ONNX) runs the households of
seeds `seed .. seed + episodes - 1` (10_000 and up by default; training used seeds below
10_000) through `sim.harness.run_lockstep`. Main metric: event F1 of the plugin's alarms
against the injected faults (sim/energy/metrics.py); precision, recall, detection delay and
recall per fault kind go under "extra".
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.config.sections import RuntimeConfig
from agent.runtime.base import Model
from sim.compare import compare, f1_of_counts
from sim.energy.metrics import Score, score_alarms
from sim.energy.world import REALISTIC_FAULT_RATE_PER_H, HouseholdPower, make_world
from sim.harness import run_lockstep

DEFAULT_EPISODES = 12
DEFAULT_SEED = 10_000
EPISODE_HOURS = 6.0
QUICK_EPISODES = 2
QUICK_HOURS = 1.5
QUICK_FAULT_RATE_PER_H = 3.0
TAIL_S = 900.0
"""Faults starting this close to the end of an episode are not scored (no time to catch)."""
BASELINE_PARAMS = {"detector": "threshold", "spike_w": 750.0, "rearm_ticks": 300}
"""The baseline at its best: models/train/energy.py `tune_baseline` (training seeds 0..47)."""
MODEL_NAME = "energy_anomaly"
REPO = Path(__file__).resolve().parents[2]

ModelFactory = Callable[[], "Model | None"]


def _variants(folder: Path) -> dict[str, tuple[ModelFactory, dict[str, Any]]]:
    """Every variant: how to load its model, and the plugin params it runs with."""
    from agent.runtime.loader import load_model
    from agent.runtime.manifest import load_manifest
    from agent.runtime.onnx import OnnxModel

    def float_model() -> Model:
        # The unquantized network, for this comparison only (not listed in the manifest files).
        m = load_manifest(folder)
        hints = ([t.shape for t in m.inputs], [t.shape for t in m.outputs])
        return OnnxModel(
            folder / "eval" / "float.onnx", name=m.name, version=m.version, shape_hints=hints
        )

    rt = RuntimeConfig()
    return {
        "baseline": (lambda: None, BASELINE_PARAMS),
        "float": (float_model, {}),
        "int8_tflite": (lambda: load_model(folder, rt, fmt="tflite"), {}),
        "int8_onnx": (lambda: load_model(folder, rt, fmt="onnx"), {}),
    }


def run_episode(
    seed: int,
    *,
    hours: float,
    model: Model | None,
    params: dict[str, Any] | None = None,
    fault_rate_per_h: float = REALISTIC_FAULT_RATE_PER_H,
) -> tuple[Score, list[float], HouseholdPower]:
    """One household through the plugin: its score, alarm times (s) and the world afterwards."""
    from plugins.energy import EnergyPlugin

    world = make_world(seed, fault_rate_per_h=fault_rate_per_h)
    plugin = EnergyPlugin()
    duration = hours * 3600.0
    result = run_lockstep(
        plugin, world, duration_s=duration, rate_hz=plugin.default_rate_hz,
        params=params, model=model,
    )  # fmt: skip
    alarms = [e.ts_ns / 1e9 for e in result.events if e.kind != "sensor_dropout"]
    faults = world.faults_before(world.t)
    return score_alarms(alarms, faults, scored_until=duration - TAIL_S), alarms, world


def evaluate(
    *,
    episodes: int | None = None,
    seed: int = DEFAULT_SEED,
    plot_dir: Path | None = None,
    quick: bool = False,
    models_dir: Path | None = None,
) -> dict[str, Any]:
    """Score every variant on the same held-out households; main metric: event F1.

    `episodes` None: DEFAULT_EPISODES (about a minute on 2 idle cores), or QUICK_EPISODES with
    `quick` (shorter households with more faults, for tests).
    """
    if episodes is None:
        episodes = QUICK_EPISODES if quick else DEFAULT_EPISODES
    if episodes < 1:
        raise ValueError(f"episodes must be at least 1 (got {episodes})")
    folder = (models_dir or REPO / "models") / MODEL_NAME
    hours = QUICK_HOURS if quick else EPISODE_HOURS
    rate = QUICK_FAULT_RATE_PER_H if quick else REALISTIC_FAULT_RATE_PER_H
    results: dict[str, float] = {}
    extra: dict[str, Any] = {}
    first_alarms: dict[str, list[float]] = {}
    scores: dict[str, list[Score]] = {}
    seeds = [seed + k for k in range(episodes)]
    for name, (factory, params) in _variants(folder).items():
        model = factory()
        total = Score()
        scores[name] = []
        try:
            for k in range(episodes):
                score, alarms, _ = run_episode(
                    seed + k, hours=hours, model=model, params=params, fault_rate_per_h=rate
                )
                scores[name].append(score)
                total += score
                if k == 0:
                    first_alarms[name] = alarms
        finally:
            if model is not None:
                model.close()
        results[name] = round(total.f1, 4)
        extra[name] = total.summary()
    extra["per_episode"] = {n: [round(s.f1, 4) for s in eps] for n, eps in scores.items()}
    if plot_dir is not None:
        from sim.energy.plot import plot_evaluation

        world = make_world(seed, fault_rate_per_h=rate)
        extra["plots"] = plot_evaluation(plot_dir, world, hours, first_alarms, extra)
    return {
        "domain": "energy",
        "metric": "f1",
        "higher_is_better": True,
        "results": results,
        # F1 pools the alarm counts of the episodes, so the bootstrap resamples the counts.
        "compare": compare(
            {
                n: f1_of_counts(
                    [s.detected for s in eps],
                    [s.false_alarms for s in eps],
                    [s.faults for s in eps],
                )
                for n, eps in scores.items()
            },
            {n: seeds for n in scores},
            metric="f1",
            higher_is_better=True,
        ),
        "episodes": episodes,
        "seed": seed,
        "hours_per_episode": hours,
        "extra": extra,
    }
