"""Train `robot_policy`: a small MLP distilled from the analytic expert of sim/robot/expert.py.

Behaviour cloning with DAgger: round 0 records the expert driving (with injected heading noise,
so its data shows recoveries); every later round lets the current student drive (through the
real plugin and its safety layer) and has the expert label every state the student visited, so
the student learns to recover from its own mistakes. The
network sees the raw sensor units (32 lidar ranges in m, goal distance in m, cos and sin of the
goal bearing); normalization is its first layer, so the plugin feeds the sensors as read. It
outputs the expert's action in one row: heading logits over 72 bins (cross-entropy against a
Gaussian around the expert's heading) and the speed in 0.1 m/s (squared error); the plugin
turns it into wheel speeds.

Run from the repo root: `python -m models.train.robot` (train extra; 7-15 minutes on 2 cores,
most of it driving the simulator through the plugin).
Seeds: training rooms use seeds 0..8_999, the validation rooms of the quality table 9_000..9_999;
the evaluation (`edge-agent sim eval robot`) uses 10_000 and up, never seen here.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from models.train.export import evaluate_file, export_model, print_table, update_quality  # noqa: E402
from sim.robot.controllers import ControllerModel, Held  # noqa: E402
from sim.robot.eval import run_episodes, summarize  # noqa: E402
from sim.robot.expert import (  # noqa: E402
    BIN_WIDTH,
    N_BINS,
    OBS_SIZE,
    SPEED_SCALE,
    as_output,
    expert_action,
    heading_targets,
)

Outputs = np.ndarray  # (B, 73) action rows

NAME = "robot_policy"
VERSION = "1.0.0"
OUT = ROOT / "models" / NAME
TRAIN_SEED = 4
HIDDEN = (256, 256, 128)
ROUNDS = (  # (seed offset, episodes, driver)
    (0, 120, "expert"),
    (1_000, 55, "student"),
    (2_500, 55, "student"),
    (4_000, 55, "student"),
    (5_500, 55, "student"),
    (7_000, 55, "student"),
    (8_000, 55, "student"),
)
EPOCHS = {"first": 12, "middle": 6, "last": 16}
NOISE_RAD = 0.35  # round 0: the expert drives with its heading off by this (std) ...
NOISE_EVERY = 20  # ... drawn anew every this many plans (0.2 s), so its data shows recoveries
VALIDATION_SEEDS = range(9_000, 9_020)
RECORD_EVERY = 10  # ticks between recorded observations (50 Hz of the 500 Hz loop)
NEAR = 0.8  # m: lidar returns nearer than this also enter the network as nearness
CLOSE = ((0.45, 2.0), (0.3, 5.0))  # rare states near obstacles decide safety: with a return
# nearer than each distance (m), a state weighs this much more in the loss
SPEED_WEIGHT = 0.1  # speed MSE (0.1 m/s)^2 against heading cross-entropy (nats)
EXPERT_HOLD = 5  # while the expert drives, it re-plans at 100 Hz (the lidar's rate)
#: Demo situations in a third of the training rooms: obstacles that pop up in front.
POPUP_WORLD: dict[str, Any] = {
    "auto_restart": False,
    "popup_interval_s": 4.0,
    "dropout_interval_s": 0.0,
}


def _log(msg: str) -> None:
    print(f"[robot {time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Recorder:
    """A driver for ControllerModel that also keeps every k-th observation it is shown."""

    def __init__(self, act: Callable[[np.ndarray], Outputs]) -> None:
        self.act = act
        self.rows: list[np.ndarray] = []
        self._calls = 0

    def __call__(self, obs: np.ndarray) -> Outputs:
        if self._calls % RECORD_EVERY == 0:
            self.rows.append(obs[0].copy())
        self._calls += 1
        return self.act(obs)


class NoisyExpert:
    """The expert with a slowly varying heading error: it drives off its own path and back.

    The recorded observations are labelled afterwards with the clean expert (DART-style noise
    injection), so the data shows how to recover from the mistakes a student makes.
    """

    def __init__(self, seed: int) -> None:
        self._rng = np.random.default_rng(seed)
        self._calls = 0
        self._noise = 0.0

    def __call__(self, obs: np.ndarray) -> Outputs:
        if self._calls % NOISE_EVERY == 0:
            self._noise = float(self._rng.normal(0.0, NOISE_RAD))
        self._calls += 1
        heading, speed = expert_action(obs)
        return as_output((heading + self._noise, speed))


def expert_outputs(obs: np.ndarray) -> Outputs:
    """The expert's action as the policy's output row."""
    return as_output(expert_action(obs))


def collect(
    seeds: range, act: Callable[[np.ndarray], Outputs]
) -> tuple[np.ndarray, dict[str, float]]:
    """Drive each seeded room with `act` through the plugin; observations seen, and outcomes."""
    rec = Recorder(act)
    model = ControllerModel("driver", rec)
    episodes = []
    for i, seed in enumerate(seeds):
        world = POPUP_WORLD if seed % 3 == 0 else None
        episodes.extend(run_episodes(model, [seed], world=world))
        if (i + 1) % 20 == 0:
            _log(f"  {i + 1}/{len(seeds)} episodes, {len(rec.rows)} observations")
    return np.stack(rec.rows).astype(np.float32), summarize(episodes)


def label(obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The expert's heading (rad) and training targets (B, 73): soft bins, then scaled speed."""
    parts = [expert_action(obs[i : i + 2048]) for i in range(0, len(obs), 2048)]
    heading = np.concatenate([p[0] for p in parts])
    speed = np.concatenate([p[1] for p in parts])
    targets = np.concatenate([heading_targets(heading), SPEED_SCALE * speed[:, None]], axis=1)
    return heading, targets.astype(np.float32)


def action_loss(y_true: Any, y_pred: Any) -> Any:
    """Cross-entropy over the heading bins plus weighted squared error of the speed."""
    import keras
    from keras import ops

    ce = keras.losses.categorical_crossentropy(
        y_true[:, :N_BINS], y_pred[:, :N_BINS], from_logits=True
    )
    return ce + SPEED_WEIGHT * ops.square(y_true[:, N_BINS] - y_pred[:, N_BINS])


def features(x: np.ndarray) -> np.ndarray:
    """What the graph computes before normalizing: the raw row plus lidar nearness.

    Nearness, max(NEAR - range, 0), is zero for every return farther than NEAR: the few
    returns that decide whether the robot may move forward stand out instead of hiding in
    the spread of all 32 ranges.
    """
    return np.concatenate([x, np.maximum(NEAR - x[:, : OBS_SIZE - 3], 0.0)], axis=1)


def build_model(sample: np.ndarray) -> Any:
    """Nearness features, normalization (adapted to `sample`), a ReLU MLP, then one row:
    heading logits and speed."""
    import keras

    keras.utils.set_random_seed(TRAIN_SEED)
    inp = keras.Input((OBS_SIZE,), name="input")
    lidar = inp[:, : OBS_SIZE - 3]
    near = keras.layers.ReLU(name="nearness")(
        keras.layers.Rescaling(-1.0, offset=NEAR, name="near_offset")(lidar)
    )
    x = keras.layers.Concatenate(name="features")([inp, near])
    norm = keras.layers.Normalization(name="normalize")
    norm.adapt(features(sample))
    x = norm(x)
    for i, width in enumerate(HIDDEN):
        x = keras.layers.Dense(width, activation="relu", name=f"dense{i}")(x)
    heading = keras.layers.Dense(N_BINS, name="heading")(x)
    speed = keras.layers.Dense(1, name="speed")(x)
    action = keras.layers.Concatenate(name="action")([heading, speed])
    return keras.Model(inp, action, name=NAME)


def fit(model: Any, x: np.ndarray, targets: np.ndarray, epochs: int) -> float:
    """Train with a cosine-decayed Adam, near-obstacle states weighted up; returns the final
    validation loss."""
    import keras

    rng = np.random.default_rng(TRAIN_SEED)
    order = rng.permutation(len(x))
    cut = int(0.95 * len(x))
    tr, va = order[:cut], order[cut:]
    steps = epochs * (len(tr) // 256 + 1)
    schedule = keras.optimizers.schedules.CosineDecay(2e-3, steps, alpha=0.05)
    model.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss=action_loss,
    )
    nearest = x[:, : OBS_SIZE - 3].min(axis=1)
    weight = 1.0 + sum(np.where(nearest < d, w, 0.0) for d, w in CLOSE)
    hist = model.fit(
        x[tr],
        targets[tr],
        sample_weight=weight[tr],
        batch_size=256,
        epochs=epochs,
        validation_data=(x[va], targets[va], weight[va]),
        verbose=2,
        shuffle=True,
    )
    return float(hist.history["val_loss"][-1])


def numpy_policy(model: Any) -> Callable[[np.ndarray], Outputs]:
    """The Keras model as plain numpy (fast enough to drive at 500 Hz during DAgger)."""
    norm = model.get_layer("normalize")
    mean = np.asarray(norm.mean, np.float32).reshape(-1)
    std = np.sqrt(np.maximum(np.asarray(norm.variance, np.float32).reshape(-1), 1e-12))
    layers = [model.get_layer(f"dense{i}").get_weights() for i in range(len(HIDDEN))]
    head_w, head_b = model.get_layer("heading").get_weights()
    speed_w, speed_b = model.get_layer("speed").get_weights()

    def act(obs: np.ndarray) -> Outputs:
        h = (features(obs) - mean) / std
        for w, b in layers:
            h = np.maximum(h @ w + b, 0.0)
        return np.concatenate([h @ head_w + head_b, h @ speed_w + speed_b], axis=1)

    return act


def offline_quality(path: Path, obs: np.ndarray) -> dict[str, float]:
    """How closely a file's action matches the expert's on held-out states."""
    out = evaluate_file(path, obs)[0]
    heading, targets = label(obs)
    got = np.argmax(out[:, :N_BINS], axis=1) * BIN_WIDTH
    err = np.abs(np.angle(np.exp(1j * (got - heading))))
    speed_err = np.abs(out[:, N_BINS] - targets[:, N_BINS]) / SPEED_SCALE
    return {
        "heading_within_10deg": float(np.mean(err <= np.radians(10.0))),
        "speed_mae": float(np.mean(speed_err)),
    }


def validate(files: dict[str, Path]) -> list[dict[str, Any]]:
    """Closed-loop validation (seeds 9_000+) of the expert and every exported file."""
    from agent.config.sections import RuntimeConfig
    from agent.runtime.loader import load_model
    from agent.runtime.onnx import OnnxModel
    from sim.robot.controllers import expert_model

    models: dict[str, Any] = {"expert": expert_model(hold=EXPERT_HOLD)}
    models["float"] = OnnxModel(files["float"], name=NAME, version="float")
    models["int8_tflite"] = load_model(OUT, RuntimeConfig(), fmt="tflite")
    models["int8_onnx"] = load_model(OUT, RuntimeConfig(), fmt="onnx")
    rows = []
    for name, model in models.items():
        stats = summarize(run_episodes(model, VALIDATION_SEEDS))
        model.close()
        rows.append({"variant": name, **stats})
        _log(f"validation {name}: success {stats['success_rate']:.3f}")
    return rows


def main() -> None:
    """Collect, distil with DAgger, export int8, validate and print the quality table."""
    t0 = time.time()
    xs: list[np.ndarray] = []
    model = None
    round_stats = []
    for r, (offset, n, driver) in enumerate(ROUNDS):
        seeds = range(offset, offset + n)
        if driver == "expert" or model is None:
            act: Callable[[np.ndarray], Outputs] = Held(NoisyExpert(TRAIN_SEED), EXPERT_HOLD)
        else:
            act = numpy_policy(model)
        _log(f"round {r}: {n} episodes driven by the {driver} (seeds {offset}..{offset + n - 1})")
        obs, stats = collect(seeds, act)
        round_stats.append({"round": r, "driver": driver, **stats})
        _log(f"  driver success {stats['success_rate']:.3f}; {len(obs)} new observations")
        xs.append(obs)
        x = np.concatenate(xs)
        _, targets = label(x)
        if model is None:
            model = build_model(x)
        _log(f"  training on {len(x)} observations")
        stage = "first" if r == 0 else "last" if r == len(ROUNDS) - 1 else "middle"
        val_mse = fit(model, x, targets, epochs=EPOCHS[stage])
        _log(f"  validation loss {val_mse:.4f} (weighted cross-entropy + speed MSE)")
    assert model is not None
    x = np.concatenate(xs)
    rng = np.random.default_rng(TRAIN_SEED)
    calib = x[rng.choice(len(x), 500, replace=False)]
    held_obs, _ = collect(range(9_500, 9_504), Held(expert_outputs, EXPERT_HOLD))
    golden = held_obs[rng.choice(len(held_obs), 8, replace=False)]
    result = export_model(
        OUT,
        name=NAME,
        version=VERSION,
        task="control",
        description="Differential-drive robot policy: 32 lidar ranges + goal (distance, cos, "
        "sin of bearing) -> heading (72-bin logits) and speed (m/s). Distilled from an "
        "analytic free-space-following expert (behaviour cloning + DAgger).",
        keras_model=model,
        calibration=calib,
        golden_inputs=golden,
        output_names=("action",),
        preprocessing={
            "input": "lidar[32] m (ray i at 360*i/32 deg CCW of heading, max 4 m), "
            "goal distance m, cos(bearing), sin(bearing); raw units, normalized in-graph",
            "output": "action row: [0:72] heading logits, bin k = k*5 deg CCW of straight "
            "ahead (decode: argmax, then a parabola through the peak and its neighbours); "
            "[72] forward speed in units of 0.1 m/s",
            "wheels": "speed -+ wheel_base/2 * clip(3 * heading, +-2.5 rad/s), speed limited "
            "so no wheel exceeds 1 m/s (plugins/robot/plugin.py)",
        },
        training={
            "script": "models/train/robot.py",
            "seed": TRAIN_SEED,
            "rounds": [{"seeds": [o, o + n - 1], "episodes": n, "driver": d} for o, n, d in ROUNDS],
            "observations": len(x),
            "validation_seeds": [VALIDATION_SEEDS.start, VALIDATION_SEEDS.stop - 1],
            "evaluation_seeds": "10000 and up (held out: never used in training)",
            "hidden": list(HIDDEN),
        },
        quality={},
    )
    # Offline agreement with the expert on held-out states, per file.
    offline = {
        key: offline_quality(path, held_obs)
        for key, path in (
            ("float", result.float_onnx),
            ("int8_tflite", result.tflite),
            ("int8_onnx", result.onnx),
        )
    }
    rows = validate({"float": result.float_onnx})
    quality = {
        "metric": "success_rate",
        "validation_seeds": [VALIDATION_SEEDS.start, VALIDATION_SEEDS.stop - 1],
        "validation_success_rate": {r["variant"]: r["success_rate"] for r in rows},
        "validation_time_to_goal_s": {r["variant"]: r["mean_time_to_goal_s"] for r in rows},
        "offline_vs_expert": offline,
    }
    update_quality(OUT, quality)
    _log(f"done in {time.time() - t0:.0f} s")
    print("\nDAgger rounds (driver success on training rooms):")
    print_table(
        [
            {k: v for k, v in s.items() if k in ("round", "driver", "success_rate")}
            for s in round_stats
        ]
    )
    print("\nQuality (closed loop, validation rooms 9000-9019; offline agreement with the expert):")
    print_table(
        [
            {
                "variant": r["variant"],
                "success_rate": r["success_rate"],
                "time_to_goal_s": r["mean_time_to_goal_s"],
                "estops/ep": r["estops_per_episode"],
                "heading_10deg": offline.get(r["variant"], {}).get("heading_within_10deg", 1.0),
                "speed_mae": offline.get(r["variant"], {}).get("speed_mae", 0.0),
            }
            for r in rows
        ]
    )
    print(
        f"\nparameters {model.count_params()}, int8 tflite {result.tflite.stat().st_size} B, "
        f"float onnx {result.float_onnx.stat().st_size} B, int8 onnx {result.onnx.stat().st_size} B"
    )


if __name__ == "__main__":
    main()
