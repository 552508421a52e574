"""Closed-loop evaluation: the real smart home plugin, runtime and sim HAL against held-out houses.

Variants, all through `run_lockstep` with the same plugin code:
- baseline: the plugin as a fixed-schedule thermostat (`control = "schedule"`, no model);
- float: the unquantized network (models/smart_home_comfort/eval/float.onnx, ONNX Runtime);
- int8_tflite / int8_onnx: the shipped int8 files, loaded by `agent.runtime.loader.load_model`.

Main metric: comfort violation, degree-hours per house-day outside the comfort band (20-24 C)
in occupied rooms with shut windows; lower is better. Extra: electric energy per house-day,
stuffy hours (occupied, CO2 > 1000 ppm), dark hours (someone awake under 250 lux).
Evaluation seeds start at 10_000: training (models/train/smart_home.py) uses seeds < 10_000.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from agent.runtime.base import Model
from sim.compare import compare, mean_of
from sim.harness import run_lockstep
from sim.smart_home.house import N_ROOMS, ROOMS
from sim.smart_home.world import HouseSim

MODEL = "smart_home_comfort"
MODELS_DIR = Path(__file__).resolve().parents[2] / "models"
EVAL_SEED = 10_000
RATE_HZ = 10.0
VARIANTS = ("baseline", "float", "int8_tflite", "int8_onnx")
METRIC = "comfort_violation_kh_per_day"


def evaluate(
    *, episodes: int = 20, seed: int = EVAL_SEED, plot_dir: Path | None = None, quick: bool = False
) -> dict[str, Any]:
    """Run every variant over `episodes` seeded houses (one day each; two hours if `quick`)."""
    if seed < EVAL_SEED:
        raise ValueError(f"evaluation seeds start at {EVAL_SEED} (lower ones are for training)")
    if episodes < 1:
        raise ValueError(f"episodes must be at least 1 (got {episodes})")
    days = 2.0 / 24.0 if quick else 1.0
    per_variant: dict[str, list[dict[str, float]]] = {}
    seeds: dict[str, list[int]] = {}
    traces: dict[str, dict[str, np.ndarray]] = {}
    for variant in VARIANTS:
        model = _load(variant)
        try:
            runs = []
            for e in range(episodes):
                record = plot_dir is not None and e == 0
                stats, trace = run_episode(seed + e, days, model, record=record)
                runs.append(stats)
                if trace is not None:
                    traces[variant] = trace
            per_variant[variant] = runs
            seeds[variant] = [seed + e for e in range(episodes)]
        finally:
            if model is not None:
                model.close()
    means = {
        v: {k: float(np.mean([r[k] for r in runs])) for k in runs[0]}
        for v, runs in per_variant.items()
    }
    result: dict[str, Any] = {
        "domain": "smart_home",
        "metric": METRIC,
        "higher_is_better": False,
        "results": {v: round(m["comfort_violation_kh_per_day"], 4) for v, m in means.items()},
        "compare": compare(
            {v: mean_of([r[METRIC] for r in runs]) for v, runs in per_variant.items()},
            seeds,
            metric=METRIC,
            higher_is_better=False,
        ),
        "episodes": episodes,
        "seed": seed,
        "extra": {
            "days_per_episode": days,
            "energy_kwh_per_day": {v: round(m["energy_kwh_per_day"], 3) for v, m in means.items()},
            "stuffy_h_per_day": {v: round(m["stuffy_h_per_day"], 3) for v, m in means.items()},
            "dark_h_per_day": {v: round(m["dark_h_per_day"], 3) for v, m in means.items()},
            "occupied_room_h_per_day": round(means["baseline"]["occupied_h_per_day"], 2),
            "events_per_day": {v: round(m["events_per_day"], 1) for v, m in means.items()},
            "int8_tflite_vs_float": _rel(means, "int8_tflite"),
            "int8_onnx_vs_float": _rel(means, "int8_onnx"),
            "per_episode": {
                v: [round(r[METRIC], 4) for r in runs] for v, runs in per_variant.items()
            },
        },
    }
    if plot_dir is not None:
        result["extra"]["plots"] = plot(traces, Path(plot_dir))
    return result


def _rel(means: dict[str, dict[str, float]], variant: str) -> float:
    f = means["float"]["comfort_violation_kh_per_day"]
    q = means[variant]["comfort_violation_kh_per_day"]
    return round((q - f) / f, 4) if f > 0 else 0.0


def _load(variant: str) -> Model | None:
    from agent.config.sections import RuntimeConfig
    from agent.runtime.loader import load_model

    folder = MODELS_DIR / MODEL
    if variant == "baseline":
        return None
    if variant == "float":
        from agent.runtime.manifest import load_manifest
        from agent.runtime.onnx import OnnxModel

        m = load_manifest(folder)
        hints = ([t.shape for t in m.inputs], [t.shape for t in m.outputs])
        return OnnxModel(
            folder / "eval" / "float.onnx", name=m.name, version=m.version, shape_hints=hints
        )
    return load_model(folder, RuntimeConfig(), fmt="tflite" if variant == "int8_tflite" else "onnx")


def run_episode(
    seed: int, days: float, model: Model | None, *, record: bool = False
) -> tuple[dict[str, float], dict[str, np.ndarray] | None]:
    """One house for `days`: the metrics per day and, if `record`, a trace every 5 minutes."""
    from plugins.smart_home import SmartHomePlugin

    sim = HouseSim(start_hour=0.0, window_per_h=0.15, dropout_per_h=0.02)
    sim.reset(seed)
    params = {"control": "schedule"} if model is None else {}
    rows: list[np.ndarray] = []
    on_tick: Callable[[Any, int], None] | None = None
    if record:

        def on_tick(s: Any, _now: int) -> None:
            h = s.house
            if round(h.t / h_dt()) % 10 == 0:
                rows.append(
                    np.concatenate(
                        [[h.hours], h.t_air[0], h.heat_sp[0], h.occupied[0], h.t_out, h.window[0]]
                    )
                )

    res = run_lockstep(
        SmartHomePlugin(),
        sim,
        duration_s=days * 86400.0,
        rate_hz=RATE_HZ,
        params=params,
        model=model,
        on_tick=on_tick,
    )
    h = sim.house
    stats = {
        "comfort_violation_kh_per_day": float(h.discomfort_kh[0]) / days,
        "energy_kwh_per_day": float(h.energy_kwh[0].sum()) / days,
        "stuffy_h_per_day": float(h.stuffy_h[0]) / days,
        "dark_h_per_day": float(h.dark_h[0]) / days,
        "occupied_h_per_day": float(h.occupied_h[0]) / days,
        "events_per_day": len(res.events) / days,
    }
    trace = None
    if record and rows:
        a = np.stack(rows)
        r = N_ROOMS
        trace = {
            "hours": a[:, 0],
            "temp": a[:, 1 : 1 + r],
            "heat_sp": a[:, 1 + r : 1 + 2 * r],
            "occupied": a[:, 1 + 2 * r : 1 + 3 * r],
            "outdoor": a[:, 1 + 3 * r],
            "window": a[:, 2 + 3 * r : 2 + 4 * r],
        }
    return stats, trace


def h_dt() -> float:
    """The simulator's step in seconds."""
    return HouseSim.dt


def plot(traces: dict[str, dict[str, np.ndarray]], out_dir: Path) -> list[str]:
    """Room temperatures against the comfort band, occupancy shaded: one PNG per variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for variant, tr in traces.items():
        fig, axes = plt.subplots(N_ROOMS, 1, figsize=(11, 9), sharex=True)
        hours = tr["hours"]
        # The axis spans every line drawn: a winter night outdoors is far below the 14 C floor.
        lo = min(14.0, float(np.floor(tr["outdoor"].min())) - 1.0)
        hi = max(30.0, float(np.ceil(tr["outdoor"].max())) + 1.0)
        for r, ax in enumerate(axes):
            ax.axhspan(20.0, 24.0, color="tab:green", alpha=0.12, label="comfort band")
            occ = tr["occupied"][:, r] > 0.5
            ax.fill_between(hours, lo, hi, where=occ, color="tab:blue", alpha=0.1, label="occupied")
            ax.plot(hours, tr["temp"][:, r], color="tab:red", lw=1.2, label="room")
            ax.plot(hours, tr["heat_sp"][:, r], color="tab:orange", lw=0.8, ls="--", label="heat")
            ax.plot(hours, tr["outdoor"], color="grey", lw=0.8, label="outdoor")
            ax.set_ylim(lo, hi)
            ax.set_ylabel(f"{ROOMS[r]} (C)")
        axes[0].legend(loc="upper right", fontsize=7, ncol=5)
        axes[0].set_title(f"smart_home {variant}: room temperatures, comfort band, occupancy")
        axes[-1].set_xlabel("hour")
        fig.tight_layout()
        path = out_dir / f"smart_home_{variant}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(str(path))
    return written


def main(argv: list[str] | None = None) -> None:
    """`python -m sim.smart_home.eval [--episodes N] [--seed S] [--plot DIR] [--quick]`."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--episodes", type=int, default=20)
    ap.add_argument("--seed", type=int, default=EVAL_SEED)
    ap.add_argument("--plot", type=Path, default=None)
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args(argv)
    result = evaluate(episodes=a.episodes, seed=a.seed, plot_dir=a.plot, quick=a.quick)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
