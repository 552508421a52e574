"""Paths and types shared by the import tests (fixtures are in conftest.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
WAVEFORM = ROOT / "models" / "waveform_classifier"
FLOAT_TFLITE_WITH_NAN = ROOT / "tests" / "ota" / "data" / "nan" / "model.tflite"


@dataclass(frozen=True)
class External:
    """An exported model file and its calibration .npz (held-out samples with targets)."""

    model: Path
    calibration: Path


def digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return (x / 16.0).astype(np.float32), y.astype(np.int64)
