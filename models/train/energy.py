"""Train `energy_anomaly`: a windowed 1D-conv detector of household power faults.

Input: one flat window per second (see sim/energy/dataset.py for the layout): the last 256
mains samples (1 Hz) and the minima of the last 128 one-minute blocks, both as the square root
of watts (the plugin takes the root while copying its ring into the input tensor; int8 input
quantization of raw watts would leave ~50 W steps, wider than the faults it must see).
Output: probabilities of normal, spike, compressor_failure, standby_creep.

Data: simulated households (sim/energy): training seeds 0..639 (4 h each, windows class-balanced
and randomly scaled so the net cannot learn a household by its levels), validation seeds
9_000..9_035 (alarm threshold tuning), all < 10_000; evaluation (sim/energy/eval.py) uses seeds
from 10_000 on, never seen here. TensorFlow on CPU is seeded but not bit-exact across runs
(thread-order rounding), so a rerun gives a close, not identical, model.
Run from the repo root: `make train` (every script), or
`.venv-train/bin/python -m models.train.energy`.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from models.train.export import evaluate_file, export_model, print_table, update_quality  # noqa: E402
from sim.energy.dataset import (  # noqa: E402
    BLOCK,
    CLASSES,
    COARSE,
    FINE,
    INPUT_SIZE,
    forward_fill,
    labels,
    windows,
)
from sim.energy.metrics import Score, alarms_from_scores, score_alarms  # noqa: E402
from sim.energy.schedule import Fault  # noqa: E402
from sim.energy.world import make_world  # noqa: E402

NAME = "energy_anomaly"
VERSION = "1.0.0"
TRAIN_SEED = 11
TRAIN_SEEDS = range(0, 640)
VAL_SEEDS = range(9_000, 9_036)
FILE_CHECK_HOUSEHOLDS = 12  # exported files are scored row by row: slow, so on fewer houses
TRAIN_HOURS = 4
VAL_HOURS = 6
TRAIN_FAULT_RATE_PER_H = 1.5  # denser than evaluation: more positives per simulated hour
PER_CLASS = {
    "normal": 60_000,
    "spike": 15_000,
    "compressor_failure": 15_000,
    "standby_creep": 30_000,
}
EPOCHS = 12
BATCH = 256
GOLDEN_SEED = 9_000
CALIBRATION = 1280
SCALE = 1.0 / 30.0
FLOOR_BLOCKS = 15
RELEASE_RATIO = 0.5


@dataclass
class Episode:
    """One simulated household: held mains readings, fresh-reading flags, labels, faults."""

    filled: np.ndarray
    valid: np.ndarray
    y: np.ndarray
    w: np.ndarray
    faults: list[Fault]


def simulate(seed: int, hours: int, fault_rate: float) -> Episode:
    """Record `hours` of one household and label every second."""
    sim = make_world(seed, fault_rate_per_h=fault_rate, dropout_rate_per_h=1.0)
    rec = sim.record(hours * 3600)
    faults = sim.faults_before(sim.t)
    y, w = labels(faults, len(rec.mains))
    return Episode(forward_fill(rec.mains), rec.dropout == 0, y, w, faults)


def to_model_units(x: np.ndarray) -> np.ndarray:
    """What the plugin feeds: sqrt of watts (clipped at 0)."""
    return np.sqrt(np.maximum(x, 0.0)).astype(np.float32)


def training_set(
    episodes: list[Episode], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Class-balanced windows drawn from every episode."""
    picks: dict[int, list[tuple[int, np.ndarray]]] = {c: [] for c in range(len(CLASSES))}
    for k, ep in enumerate(episodes):
        usable = ep.valid & (ep.w > 0)
        for c in range(len(CLASSES)):
            picks[c].append((k, np.flatnonzero(usable & (ep.y == c))))
    xs, ys = [], []
    for c, name in enumerate(CLASSES):
        total = sum(len(ix) for _, ix in picks[c])
        keep = min(1.0, PER_CLASS[name] / max(total, 1))
        for k, ix in picks[c]:
            chosen = ix[rng.random(len(ix)) < keep]
            if len(chosen):
                xs.append(windows(episodes[k].filled, chosen))
                ys.append(np.full(len(chosen), c))
        print(f"  {name:20s} {total:8d} candidate windows, kept {keep:.3f}")
    x, y = np.concatenate(xs), np.concatenate(ys)
    order = rng.permutation(len(x))
    return to_model_units(augment(x[order], rng)), y[order]


def augment(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Scale and shift each window a little, so the net cannot learn a household by its levels."""
    gain = rng.uniform(0.85, 1.18, (len(x), 1)).astype(np.float32)
    shift = rng.uniform(-30.0, 30.0, (len(x), 1)).astype(np.float32)
    return np.maximum(x * gain + shift, 0.0)


def build_model() -> Any:
    """Two conv branches (seconds and minutes) over one flat input, normalization inside."""
    import keras
    from keras import layers

    def conv(x: Any, filters: int, stride: int) -> Any:
        # Conv2D with (k, 1) kernels rather than Conv1D: tf2onnx then keeps the bias inside the
        # Conv node, one quantization point fewer per layer in the int8 ONNX file.
        return layers.Conv2D(filters, (5, 1), strides=(stride, 1), activation="relu")(x)

    inp = keras.Input((INPUT_SIZE,), name="input")
    scaled = layers.Rescaling(SCALE)(inp)  # sqrt(W)/30: 0..~4 for 0..15 kW
    fine = layers.Reshape((FINE, 1, 1))(scaled[:, :FINE])
    h = conv(conv(conv(fine, 16, 2), 32, 2), 32, 2)
    h = layers.Concatenate()([layers.GlobalMaxPooling2D()(h), layers.GlobalAveragePooling2D()(h)])
    coarse = layers.Reshape((COARSE, 1, 1))(scaled[:, FINE:])
    # A rolling floor over FLOOR_BLOCKS blocks (min = -max(-x)) sees through fridge cycles.
    negated = layers.Rescaling(-1.0)(coarse)
    floor = layers.Rescaling(-1.0)(
        layers.MaxPooling2D((FLOOR_BLOCKS, 1), strides=1, padding="same")(negated)
    )
    g = layers.Concatenate()([coarse, floor])
    g = layers.Flatten()(conv(conv(conv(g, 24, 1), 32, 2), 32, 2))
    g = layers.Dense(32, activation="relu")(g)
    z = layers.Concatenate()([h, g])
    z = layers.Dropout(0.2)(z)
    z = layers.Dense(48, activation="relu")(z)
    out = layers.Dense(len(CLASSES), activation="softmax", name="output")(z)
    return keras.Model(inp, out)


def episode_scores(predict: Callable[[np.ndarray], np.ndarray], ep: Episode) -> np.ndarray:
    """Anomaly score (1 - p_normal) at every second with a fresh reading; 0 elsewhere."""
    idx = np.flatnonzero(ep.valid)
    scores = np.zeros(len(ep.valid), np.float32)
    probs = predict(to_model_units(windows(ep.filled, idx)))
    scores[idx] = 1.0 - probs[:, 0]
    return scores


def event_score(
    all_scores: list[np.ndarray], eps: list[Episode], thr: float, confirm: int, rearm: int
) -> Score:
    """Event-level precision/recall/F1 of the plugin's alarm logic over scored episodes."""
    total = Score()
    for scores, ep in zip(all_scores, eps, strict=True):
        fired = alarms_from_scores(
            scores, ep.valid, threshold=thr, release=thr * RELEASE_RATIO, confirm=confirm,
            rearm=rearm,
        )  # fmt: skip
        total += score_alarms([float(i) for i in fired], ep.faults)
    return total


def tune(all_scores: list[np.ndarray], eps: list[Episode]) -> tuple[float, int, int, Score]:
    """Threshold, confirmation and re-arm counts with the best event F1 on validation houses."""
    best: tuple[float, int, int, Score] | None = None
    for thr in (0.5, 0.6, 0.7, 0.8, 0.9, 0.95):
        for confirm in (1, 2, 3, 5, 8, 12, 20, 30, 45):
            for rearm in (30, 300):
                s = event_score(all_scores, eps, thr, confirm, rearm)
                if best is None or s.f1 > best[3].f1 + 1e-9:
                    best = (thr, confirm, rearm, s)
    assert best is not None
    return best


def tune_baseline(seeds: range = range(0, 48), hours: int = 6) -> tuple[float, int, Score]:
    """The threshold baseline at its best: jump size and re-arm time by grid on training seeds.

    A numpy twin of plugins/energy/threshold.py (an alarm on a rise of >= spike_w between two
    readings) through the same alarm logic; sim/energy/eval.py BASELINE_PARAMS holds the result.
    """
    eps = [simulate(s, hours, 1.0) for s in seeds]
    best: tuple[float, int, Score] | None = None
    for spike_w in (300.0, 500.0, 750.0, 1000.0, 1500.0, 2500.0):
        for rearm in (30, 120, 300, 600, 1200):
            total = Score()
            for ep in eps:
                jump = np.diff(ep.filled, prepend=ep.filled[0])
                fired = alarms_from_scores(
                    (jump >= spike_w).astype(np.float32), ep.valid, threshold=0.5, release=0.5,
                    confirm=1, rearm=rearm,
                )  # fmt: skip
                total += score_alarms([float(i) for i in fired], ep.faults)
            if best is None or total.f1 > best[2].f1 + 1e-9:
                best = (spike_w, rearm, total)
    assert best is not None
    return best


def main() -> None:
    """Simulate, train, export int8 TFLite/ONNX with golden vectors, print the quality table."""
    import keras

    t_start = time.time()
    keras.utils.set_random_seed(TRAIN_SEED)
    rng = np.random.default_rng(TRAIN_SEED)
    print(f"simulating {len(TRAIN_SEEDS)} training households x {TRAIN_HOURS} h ...")
    train_eps = [simulate(s, TRAIN_HOURS, TRAIN_FAULT_RATE_PER_H) for s in TRAIN_SEEDS]
    x_train, y_train = training_set(train_eps, rng)
    print(f"{len(x_train)} training windows ({time.time() - t_start:.0f} s)")
    model = build_model()
    steps = EPOCHS * int(np.ceil(0.9 * len(x_train) / BATCH))
    model.compile(
        optimizer=keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(3e-3, steps)),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    print(f"training {model.count_params()} parameters for {EPOCHS} epochs ...")
    model.fit(x_train, y_train, epochs=EPOCHS, batch_size=BATCH, validation_split=0.1, verbose=2)

    print(f"scoring {len(VAL_SEEDS)} validation households x {VAL_HOURS} h ...")
    val_eps = [simulate(s, VAL_HOURS, 1.0) for s in VAL_SEEDS]

    def keras_predict(x: np.ndarray) -> np.ndarray:
        return np.asarray(model.predict(x, batch_size=4096, verbose=0))

    float_scores = [episode_scores(keras_predict, ep) for ep in val_eps]
    thr, confirm, rearm, best = tune(float_scores, val_eps)
    print(f"alarm threshold {thr}, confirm {confirm}, rearm {rearm} ticks: F1 {best.f1:.4f}")

    # Drawn from the (augmented, class-balanced) training windows: they span spikes and heavy
    # loads as well as quiet nights, so no activation range is set by quiet windows alone.
    calibration = x_train[rng.choice(len(x_train), CALIBRATION, replace=False)]
    golden_rng = np.random.default_rng(GOLDEN_SEED)
    golden_ep = val_eps[0]
    fault_idx = np.flatnonzero(golden_ep.y > 0)
    golden_ix = np.concatenate(
        [golden_rng.choice(np.flatnonzero(golden_ep.valid), 4), golden_rng.choice(fault_idx, 4)]
    )
    out = ROOT / "models" / NAME
    export_model(
        out,
        name=NAME,
        version=VERSION,
        task="anomaly_detection",
        description="Household mains power anomalies (1 Hz): " + ", ".join(CLASSES[1:]),
        keras_model=model,
        calibration=calibration,
        golden_inputs=to_model_units(windows(golden_ep.filled, golden_ix)),
        preprocessing={
            "sample_period_s": 1.0,
            "fine_window": FINE,
            "coarse_window": COARSE,
            "coarse_block_s": BLOCK,
            "coarse_statistic": "min",
            "layout": "fine oldest..newest, then coarse oldest..newest",
            "input_transform": "sqrt(max(watts, 0))",
            "dropout": "hold last good reading; no inference while the reading is missing",
            "classes": list(CLASSES),
            "alarm": {
                "score": "1 - p(normal)",
                "threshold": thr,
                "confirm_ticks": confirm,
                "release": round(thr * RELEASE_RATIO, 4),
                "rearm_ticks": rearm,
            },
            "normalization": "in graph (x / 30)",
        },
        training={
            "script": "models/train/energy.py",
            "seed": TRAIN_SEED,
            "train_seeds": [TRAIN_SEEDS.start, TRAIN_SEEDS.stop - 1],
            "validation_seeds": [VAL_SEEDS.start, VAL_SEEDS.stop - 1],
            "eval_seeds": "10000 and up (sim/energy/eval.py), never used in training",
            "train_hours_per_household": TRAIN_HOURS,
            "train_windows": len(x_train),
            "epochs": EPOCHS,
        },
        quality={},
    )
    finish(out, val_eps, thr, confirm, rearm)
    spike_w, b_rearm, b_score = tune_baseline()
    print(f"threshold baseline on training seeds: spike_w {spike_w:.0f} W, rearm {b_rearm}"
          f" ticks, F1 {b_score.f1:.4f}")  # fmt: skip
    print(f"done in {time.time() - t_start:.0f} s")


def finish(
    out: Path,
    val_eps: list[Episode],
    thr: float,
    confirm: int,
    rearm: int,
) -> None:
    """After export: every file scored on the validation households, the quality table."""
    val_eps = val_eps[:FILE_CHECK_HOUSEHOLDS]
    rows = []
    quality: dict[str, object] = {
        "metric": "f1",
        "validation": f"event F1 on households {VAL_SEEDS.start}-"
        f"{VAL_SEEDS.start + FILE_CHECK_HOUSEHOLDS - 1}",
        "held_out": "edge-agent sim eval energy (seeds 10000+), see models/README.md",
    }
    print("scoring the exported files on the validation households ...")
    for label, path in [
        ("float", out / "eval" / "float.onnx"),
        ("int8_tflite", out / "model.tflite"),
        ("int8_onnx", out / "model.onnx"),
    ]:

        def file_predict(x: np.ndarray, path: Path = path) -> np.ndarray:
            return evaluate_file(path, x)[0]

        scores = [episode_scores(file_predict, ep) for ep in val_eps]
        s = event_score(scores, val_eps, thr, confirm, rearm)
        summary = s.summary()
        quality[label] = summary["f1"]
        rows.append(
            {
                "variant": label,
                "f1": s.f1,
                "precision": s.precision,
                "recall": s.recall,
                "delay_s": summary["delay_s_median"],
                "bytes": path.stat().st_size,
            }
        )
    update_quality(out, quality)
    print_table(rows)


if __name__ == "__main__":
    main()
