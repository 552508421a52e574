"""models/train/requantize.py: the float network it recovers from a QDQ file is the real one, and
the 7-bit file it writes computes alike on ONNX Runtime's fused and unfused paths (the reason for
7 bits: x86 without VNNI saturates 8-bit weights in the fused kernels)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort

from models.train.requantize import float_from_qdq, requantize
from tests.support.paths import MODELS

WAVEFORM = MODELS / "waveform_classifier"


def _run(path: Path, x: np.ndarray, level: ort.GraphOptimizationLevel) -> np.ndarray:
    options = ort.SessionOptions()
    options.graph_optimization_level = level
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: x[i : i + 1]})[0] for i in range(len(x))])


def _golden_inputs() -> np.ndarray:
    golden = json.loads((WAVEFORM / "manifest.json").read_text())["golden"]
    return np.concatenate([np.asarray(g["inputs"][0], np.float32) for g in golden])


def test_the_float_network_recovered_from_the_qdq_file_is_the_trained_one(tmp_path: Path) -> None:
    recovered = tmp_path / "float.onnx"
    float_from_qdq(WAVEFORM / "model.onnx", recovered)
    x = _golden_inputs()
    full = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    ours, trained = _run(recovered, x, full), _run(WAVEFORM / "eval" / "float.onnx", x, full)
    # Only the weights' own rounding and the activations' clip ranges differ.
    assert np.abs(ours - trained).max() < 0.02
    assert (ours.argmax(axis=1) == trained.argmax(axis=1)).all()


def test_a_requantized_file_computes_alike_fused_or_not_and_passes_its_golden_check(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "waveform_classifier"
    shutil.copytree(WAVEFORM, folder)
    (folder / "eval" / "float.onnx").unlink()  # the OTA test models' case: from the QDQ file
    figures = requantize(folder, seed=7, windows=2_000)
    assert figures["onnx_vs_reference"] <= figures["tolerance"] / 2
    x = _golden_inputs()
    fused = _run(folder / "model.onnx", x, ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
    plain = _run(folder / "model.onnx", x, ort.GraphOptimizationLevel.ORT_ENABLE_BASIC)
    assert np.abs(fused - plain).max() <= 1.5 / 255  # at most one output quantization step
    manifest = json.loads((folder / "manifest.json").read_text())
    entry = next(f for f in manifest["files"] if f["path"] == "model.onnx")
    assert entry["size"] == (folder / "model.onnx").stat().st_size
