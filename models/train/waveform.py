"""Train `waveform_classifier`: the reference model the runtime, its tests and the bench use.

Task: tell a 16-sample window of a periodic signal apart as sine, square, triangle or sawtooth,
whatever its frequency, phase, amplitude, offset and noise. Small (16-32-32-4 MLP, the first
column of shared/MEASURED.md) so per-call overhead, not arithmetic, dominates what it measures.

Run from the repo root with the train extra: `python -m models.train.waveform`.
Training seeds are 0..9_999; evaluation uses seed 10_000 (held out).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from models.train.export import evaluate_file, export_model, print_table, update_quality  # noqa: E402

NAME = "waveform_classifier"
VERSION = "1.0.0"
WINDOW = 16
CLASSES = ("sine", "square", "triangle", "sawtooth")
TRAIN_SEED = 7
EVAL_SEED = 10_000


def make_windows(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`n` labelled windows: random frequency, phase, amplitude, DC offset and noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(CLASSES), n)
    cycles = rng.uniform(0.6, 3.0, (n, 1))  # periods per window
    phase = rng.uniform(0, 1, (n, 1))
    t = np.arange(WINDOW)[None, :] / WINDOW
    u = (cycles * t + phase) % 1.0  # position within the period, 0..1
    shapes = np.stack(
        [
            np.sin(2 * np.pi * u),
            np.where(u < 0.5, 1.0, -1.0),
            4 * np.abs(u - 0.5) - 1,
            2 * u - 1,
        ]
    )
    x = shapes[labels, np.arange(n)]
    amplitude = rng.uniform(0.5, 2.0, (n, 1))
    offset = rng.uniform(-0.5, 0.5, (n, 1))
    noise = rng.normal(0, 0.05, (n, WINDOW))
    return (x * amplitude + offset + noise).astype(np.float32), labels.astype(np.int64)


def build_model(x_train: np.ndarray) -> object:
    """Float MLP with normalization inside, so callers feed raw samples."""
    import keras

    inp = keras.Input((WINDOW,), name="input")
    norm = keras.layers.Normalization(axis=None)
    norm.adapt(x_train)
    h = norm(inp)
    h = keras.layers.Dense(32, activation="relu")(h)
    h = keras.layers.Dense(32, activation="relu")(h)
    out = keras.layers.Dense(len(CLASSES), activation="softmax", name="output")(h)
    return keras.Model(inp, out)


def accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
    """Share of windows whose most likely class is the true one."""
    return float(np.mean(np.argmax(probs, axis=1) == labels))


def main() -> None:
    """Train, export int8 TFLite/ONNX with golden vectors, print the quality table."""
    import keras

    keras.utils.set_random_seed(TRAIN_SEED)
    x_train, y_train = make_windows(40_000, TRAIN_SEED)
    x_test, y_test = make_windows(4_000, EVAL_SEED)
    model = build_model(x_train)
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    model.fit(x_train, y_train, epochs=12, batch_size=256, validation_split=0.1, verbose=2)
    out = ROOT / "models" / NAME
    result = export_model(
        out,
        name=NAME,
        version=VERSION,
        task="classification",
        description="Classifies a 16-sample window as " + ", ".join(CLASSES),
        keras_model=model,
        calibration=x_train[:500],
        golden_inputs=x_test[:8],
        preprocessing={"window": WINDOW, "classes": list(CLASSES), "normalization": "in graph"},
        training={
            "script": "models/train/waveform.py",
            "seed": TRAIN_SEED,
            "train_windows": len(x_train),
            "eval_seed": EVAL_SEED,
        },
        quality={},
    )
    rows = []
    quality = {"metric": "accuracy", "eval_windows": len(x_test)}
    for label, path in [
        ("float", result.float_onnx),
        ("int8_tflite", result.tflite),
        ("int8_tflite_int8io", result.tflite_int8io),
        ("int8_onnx", result.onnx),
    ]:
        acc = accuracy(evaluate_file(path, x_test)[0], y_test)
        quality[label] = round(acc, 4)
        rows.append({"variant": label, "accuracy": acc, "bytes": path.stat().st_size})
    update_quality(out, quality)
    print_table(rows)


if __name__ == "__main__":
    main()
