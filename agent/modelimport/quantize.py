"""Float ONNX to int8 QDQ with ONNX Runtime's own static quantization.

Both per-tensor and per-channel weight scales are tried, and the one whose int8 outputs stay
closer to the float network on the calibration samples is kept: per-channel usually wins on
convolutions whose filters differ in range, and changes nothing on a small dense layer.
"""

from __future__ import annotations

import logging
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agent.errors import ModelError
from agent.modelimport.calibration import Calibration
from agent.modelimport.inspection import IoSpec

_SYMBOLIC_LITTER = "sym_shape_infer_temp.onnx"
MAX_CALIBRATION = 512  # samples fed to the calibrator; more rarely moves a min/max range


@dataclass(frozen=True)
class Quantized:
    """The chosen int8 model, how it was made, and its error against float on calibration."""

    model_bytes: bytes
    per_channel: bool
    max_error: float
    tried: dict[str, float]
    left_float: list[str]
    """Tensors the quantizer could not type (after ai.onnx.ml operators) and left float."""
    failed: dict[str, str]
    """Variants the quantizer failed on, with its reason."""


class _Reader:
    """ORT's CalibrationDataReader protocol over our samples."""

    def __init__(self, calib: Calibration, inputs: list[IoSpec]) -> None:
        self._names = [s.name for s in inputs]
        self._calib = calib
        self._i = 0

    def get_next(self) -> dict[str, np.ndarray[Any, Any]] | None:
        if self._i >= min(self._calib.count, MAX_CALIBRATION):
            return None
        feeds = dict(zip(self._names, self._calib.sample(self._i), strict=True))
        self._i += 1
        return feeds


def quantize_qdq(float_model: Any, calib: Calibration, inputs: list[IoSpec]) -> Quantized:
    """Quantize `float_model` (an onnx.ModelProto) per tensor and per channel; keep the better.

    A variant the quantizer fails on is recorded and skipped; only when both fail is the import
    refused (ModelError with the quantizer's first line).
    """
    reference = _outputs(float_model.SerializeToString(), calib, inputs)
    tried: dict[str, float] = {}
    failed: dict[str, str] = {}
    best: tuple[float, bytes, bool] | None = None
    with _root_warnings() as said, tempfile.TemporaryDirectory(prefix="edge-agent-") as tmp:
        src = _pre_processed(float_model, Path(tmp))
        for per_channel in (False, True):
            label = "per-channel" if per_channel else "per-tensor"
            dst = Path(tmp) / f"int8_{int(per_channel)}.onnx"
            try:
                _quantize(src, dst, calib, inputs, per_channel)
            except Exception as exc:  # the quantizer raises whatever its passes raise
                failed[label] = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                continue
            data = dst.read_bytes()
            err = _max_error(reference, _outputs(data, calib, inputs))
            tried[label] = err
            if best is None or err < best[0] * 0.95:  # per-channel only when clearly better
                best = (err, data, per_channel)
    if best is None:
        reasons = "; ".join(f"{k}: {v}" for k, v in failed.items())
        raise ModelError(f"ONNX Runtime quantization failed ({reasons})")
    left = sorted({m.group(1) for line in said if (m := _UNTYPED.search(line))})
    return Quantized(best[1], best[2], best[0], tried, left, failed)


def _quantize(
    src: Path, dst: Path, calib: Calibration, inputs: list[IoSpec], per_channel: bool
) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    quantize_static(
        str(src),
        str(dst),
        _Reader(calib, inputs),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
        per_channel=per_channel,
        # 7-bit weights, as the shipped models have: x86 CPUs without VNNI saturate u8 x s8
        # pair sums (models/train/export.py quantize_onnx), so 8-bit weights would compute one
        # model differently on two boards.
        reduce_range=True,
        calibrate_method=CalibrationMethod.MinMax,
        extra_options={"WeightSymmetric": True, "ActivationSymmetric": False},
    )


_UNTYPED = re.compile(r"failed to infer the type of tensor: (\S+)\.")


@contextmanager
def _root_warnings() -> Iterator[list[str]]:
    """Collect what the quantizer logs through the root logger instead of printing it.

    ORT's quantizer calls `logging.warning`, which installs a stderr handler on an unconfigured
    root logger; a handler of our own keeps the root configured, and its lines become a note.
    """
    said: list[str] = []

    class _Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            said.append(record.getMessage())

    root = logging.getLogger()
    handler = _Collect(logging.WARNING)
    root.addHandler(handler)
    try:
        yield said
    finally:
        root.removeHandler(handler)


def _pre_processed(float_model: Any, tmp: Path) -> Path:
    """ORT's recommended shape inference and graph fusion before quantizing, when it works."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    src, pre = tmp / "float.onnx", tmp / "float_pre.onnx"
    src.write_bytes(float_model.SerializeToString())
    # ORT's symbolic shape inference fails on ai.onnx.ml operators, and on failure leaves a
    # file in the current directory: skip it where it cannot work, and tidy up after it.
    foreign = any(node.domain not in ("", "ai.onnx") for node in float_model.graph.node)
    litter = Path(_SYMBOLIC_LITTER)
    had_litter = litter.exists()
    try:
        for skip_symbolic in (foreign, True):
            try:
                quant_pre_process(str(src), str(pre), skip_symbolic_shape=skip_symbolic)
            except Exception:  # an optional step: quantizing the model as exported still works
                continue
            return pre
        return src
    finally:
        if not had_litter:
            litter.unlink(missing_ok=True)


def _outputs(model: bytes, calib: Calibration, inputs: list[IoSpec]) -> list[np.ndarray[Any, Any]]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    session = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    names = [s.name for s in inputs]
    rows = [
        session.run(None, dict(zip(names, calib.sample(i), strict=True)))
        for i in range(min(calib.count, MAX_CALIBRATION))
    ]
    return [np.stack([np.asarray(r[j], np.float32) for r in rows]) for j in range(len(rows[0]))]


def _max_error(a: list[np.ndarray[Any, Any]], b: list[np.ndarray[Any, Any]]) -> float:
    return max(float(np.abs(x - y).max()) for x, y in zip(a, b, strict=True))
