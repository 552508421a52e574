"""Train the models the OTA tests update to; run with the train venv from the repo root.

    .venv-train/bin/python -m tests.ota.data.make_models [NAME ...|quality]

Each is a real model of the waveform task (models/train/waveform.py), exported with the same
pipeline as the shipped one, into tests/ota/data/<folder>:

- v1_1_0: the reference MLP retrained with another seed, version 1.1.0: a valid update;
- slow: a 1D-conv network of the same I/O shape (1x16 in, 1x4 out) with wide layers, version
  1.2.0, .tflite only: passes validation (its own golden vectors) but runs about 10x slower in
  a loop (50-100x in a tight loop, where the small model's runs stay cache-hot), for the
  health-window rollback;
- w32: the MLP on 32-sample windows, version 1.3.0: the wrong input shape for the slot;
- nan: the v1.1.0 network with a broken head that divides 0 by 0, float (unquantized) files,
  version 1.4.0 and the golden vectors of 1.0.0: a model that emits NaN.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np

# Run with -m from the repository root (see above), which puts `models.train` on sys.path.
from models.train import waveform as wf
from models.train.export import _float_onnx, _sha256, export_model

DATA = Path(__file__).resolve().parent
ROOT = DATA.parents[2]


def _train(model: object, x: np.ndarray, y: np.ndarray, epochs: int) -> None:
    import keras

    assert isinstance(model, keras.Model)
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    model.fit(x, y, epochs=epochs, batch_size=256, validation_split=0.1, verbose=2)


def _export(folder: str, version: str, model: object, x: np.ndarray, seed: int, what: str) -> None:
    out = DATA / folder
    shutil.rmtree(out, ignore_errors=True)
    x_test = _windows(512, wf.EVAL_SEED, x.shape[1])[0]
    result = export_model(
        out,
        name=wf.NAME,
        version=version,
        task="classification",
        description=f"OTA test model: {what}",
        keras_model=model,
        calibration=x[:500],
        golden_inputs=x_test[:4],
        preprocessing={"window": int(x.shape[1]), "classes": list(wf.CLASSES)},
        training={"script": "tests/ota/data/make_models.py", "seed": seed},
        quality={},
    )
    shutil.rmtree(result.float_onnx.parent)  # the eval-only float file is not needed here


def _windows(n: int, seed: int, window: int) -> tuple[np.ndarray, np.ndarray]:
    old = wf.WINDOW
    wf.WINDOW = window
    try:
        return wf.make_windows(n, seed)
    finally:
        wf.WINDOW = old


def make_v1_1_0() -> object:
    """The reference MLP with another training seed."""
    import keras

    keras.utils.set_random_seed(11)
    x, y = wf.make_windows(40_000, 11)
    model = wf.build_model(x)
    _train(model, x, y, 12)
    _export("v1_1_0", "1.1.0", model, x, 11, "reference MLP retrained with seed 11")
    return model


def make_slow() -> None:
    """Same I/O, wide 1D convolutions: much more arithmetic per call."""
    import keras

    keras.utils.set_random_seed(12)
    x, y = wf.make_windows(20_000, 12)
    inp = keras.Input((wf.WINDOW,), name="input")
    norm = keras.layers.Normalization(axis=None)
    norm.adapt(x)
    h = keras.layers.Reshape((wf.WINDOW, 1))(norm(inp))
    # Upsampled 16x: the convolutions do 16x the work for the same number of weights (file
    # size), so that even in a loop, where every run starts with cold caches, it is ~10x slower.
    h = keras.layers.UpSampling1D(16)(h)
    h = keras.layers.Conv1D(128, 3, padding="same", activation="relu")(h)
    for _ in range(3):
        h = keras.layers.Conv1D(128, 3, padding="same", activation="relu")(h)
    h = keras.layers.GlobalAveragePooling1D()(h)
    out = keras.layers.Dense(len(wf.CLASSES), activation="softmax", name="output")(h)
    model = keras.Model(inp, out)
    _train(model, x, y, 3)
    _export("slow", "1.2.0", model, x, 12, "wide 1D-conv network, same I/O, ~10x slower in a loop")
    _keep_only(DATA / "slow", "model.tflite")


def _keep_only(folder: Path, keep: str) -> None:
    """Drop every file but `keep` from a model folder and its manifest (smaller test data)."""
    path = folder / "manifest.json"
    manifest = json.loads(path.read_text())
    for f in manifest["files"]:
        if f["path"] != keep:
            (folder / f["path"]).unlink()
    manifest["files"] = [f for f in manifest["files"] if f["path"] == keep]
    path.write_text(json.dumps(manifest, indent=1) + "\n")


def make_w32() -> None:
    """The MLP on 32-sample windows: an input shape the slot cannot take."""
    import keras

    keras.utils.set_random_seed(13)
    x, y = _windows(20_000, 13, 32)
    inp = keras.Input((32,), name="input")
    norm = keras.layers.Normalization(axis=None)
    norm.adapt(x)
    h = keras.layers.Dense(32, activation="relu")(norm(inp))
    out = keras.layers.Dense(len(wf.CLASSES), activation="softmax", name="output")(h)
    model = keras.Model(inp, out)
    _train(model, x, y, 15)
    _export("w32", "1.3.0", model, x, 13, "MLP on 32-sample windows (wrong input shape)")


def make_nan(trained: object) -> None:
    """The 1.1.0 network behind a head that computes 0/0: every output is NaN."""
    import keras
    import tensorflow as tf

    assert isinstance(trained, keras.Model)
    inp = keras.Input((wf.WINDOW,), name="input")
    probs = trained(inp)

    class ZeroOverZero(keras.layers.Layer):  # type: ignore[misc]
        def call(self, inputs: list[Any]) -> Any:
            p, x = inputs
            zero = x[:, :1] - x[:, :1]  # data dependent, so the converter cannot fold it away
            return p + zero / zero

    out = ZeroOverZero(name="output")([probs, inp])
    model = keras.Model(inp, out)
    out_dir = DATA / "nan"
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    tflite = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    (out_dir / "model.tflite").write_bytes(tflite)
    _float_onnx(model, (wf.WINDOW,), "input", out_dir / "model.onnx")
    shipped = json.loads((ROOT / "models" / wf.NAME / "manifest.json").read_text())
    files = []
    for fmt, name in (("tflite", "model.tflite"), ("onnx", "model.onnx")):
        p = out_dir / name
        files.append(
            {
                "format": fmt,
                "path": name,
                "io": "float32",
                "sha256": _sha256(p),
                "size": p.stat().st_size,
                "accelerator": "cpu",
            }
        )
    manifest = {
        **shipped,
        "version": "1.4.0",
        "description": "OTA test model: 1.1.0 behind a 0/0 head, emits NaN",
        "files": files,
        "quality": {},
        "training": {"script": "tests/ota/data/make_models.py", "seed": 11},
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")


def record_accuracy() -> None:
    """Write each folder's held-out accuracy (int8 .tflite) into its manifest's quality."""
    from models.train.export import evaluate_file, update_quality

    for folder in ("v1_1_0", "slow", "w32", "nan"):
        out = DATA / folder
        manifest = json.loads((out / "manifest.json").read_text())
        window = int(manifest["inputs"][0]["shape"][-1])
        x, y = _windows(2_000, wf.EVAL_SEED, window)
        probs = evaluate_file(out / "model.tflite", x)[0]
        acc = wf.accuracy(probs, y) if np.isfinite(probs).all() else float("nan")
        quality = {"metric": "accuracy", "eval_windows": len(x), "int8_tflite": round(acc, 4)}
        if folder == "nan":
            quality = {"metric": "accuracy", "note": "every output is NaN"}
        update_quality(out, quality)
        print(folder, quality)


def main(argv: list[str]) -> None:
    """Build the named models (all by default), then record their accuracy."""
    if argv == ["quality"]:
        record_accuracy()
        return
    names = argv or ["v1_1_0", "slow", "w32", "nan"]
    trained = None
    if "v1_1_0" in names or "nan" in names:
        trained = make_v1_1_0()
    if "slow" in names:
        make_slow()
    if "w32" in names:
        make_w32()
    if "nan" in names:
        make_nan(trained)
    record_accuracy()


if __name__ == "__main__":
    main(sys.argv[1:])
