"""Turn a trained float Keras model into the files the agent ships, with a manifest.

Writes, into one model folder:
- model.tflite: full-integer int8 (representative dataset), float32 I/O: the quantize and
  dequantize ops sit inside the graph, where they cost nanoseconds instead of the microseconds
  numpy spends around the call (see shared/MEASURED.md);
- model_int8io.tflite: the same with int8 I/O, for accelerators that want raw int8 tensors
  (Edge TPU compiler input) and for callers that quantize themselves;
- model.onnx: static int8 QDQ quantization (onnxruntime.quantization) of the tf2onnx graph,
  7-bit weights (`reduce_range`, see `quantize_onnx`) so it computes alike on every x86 CPU;
- eval/float.onnx: the unquantized network, for float-vs-int8 evaluations only (not in `files`);
- manifest.json: specs, sha256 and size of every file, golden vectors, quality figures.

Input quantization is per tensor: features of very different ranges in one input tensor lose the
small ones to rounding. `export_model` warns when a feature's spread is within a few quantization
steps; feed such features pre-scaled to comparable ranges.

Needs the `train` extra (tensorflow-cpu, tf2onnx, onnx) plus onnxruntime and ai-edge-litert.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

GOLDEN_FILE_ORDER = ("model.tflite", "model_int8io.tflite", "model.onnx")


@dataclass(frozen=True)
class ExportResult:
    """Where the exported files went and the manifest written beside them."""

    folder: Path
    manifest: dict[str, Any]
    tflite: Path
    tflite_int8io: Path
    onnx: Path
    float_onnx: Path


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tflite_bytes(keras_model: Any, calibration: np.ndarray, *, int8_io: bool) -> bytes:
    import tensorflow as tf

    def representative() -> Any:
        for row in calibration:
            yield [row[None, ...].astype(np.float32)]

    converter = tf.lite.TFLiteConverter.from_keras_model(keras_model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if int8_io:
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    data: bytes = converter.convert()
    return data


def _float_onnx(
    keras_model: Any, input_shape: tuple[int, ...], input_name: str, path: Path
) -> None:
    import tensorflow as tf
    import tf2onnx

    spec = (tf.TensorSpec((1, *input_shape), tf.float32, name=input_name),)
    proto, _ = tf2onnx.convert.from_keras(keras_model, input_signature=spec, opset=17)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(proto.SerializeToString())


def quantize_onnx(float_path: Path, out_path: Path, calibration: np.ndarray) -> None:
    """Static int8 QDQ quantization of a float ONNX file, calibrated on `calibration` rows."""
    import onnxruntime as ort
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    input_name = ort.InferenceSession(str(float_path)).get_inputs()[0].name

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self._rows = iter(calibration)

        def get_next(self) -> dict[str, np.ndarray] | None:
            row = next(self._rows, None)
            return None if row is None else {input_name: row[None, ...].astype(np.float32)}

    with tempfile.TemporaryDirectory() as tmp:
        prepped = Path(tmp) / "prepped.onnx"
        quant_pre_process(str(float_path), str(prepped), skip_symbolic_shape=True)
        quantize_static(
            str(prepped),
            str(out_path),
            Reader(),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
            # 7-bit weights: x86 CPUs without VNNI (AVX2, plain AVX-512) multiply u8 x s8 pairs
            # into a saturating int16 (vpmaddubsw), so full 8-bit weights give CPU-dependent
            # outputs (0.035 vs 0.012 from the reference on the waveform golden vectors, an AVX2
            # EPYC against a VNNI machine). With 7 bits no sum can saturate: the same numbers on
            # every CPU, at the same speed.
            reduce_range=True,
            extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
        )


def evaluate_file(path: Path, x: np.ndarray) -> list[np.ndarray]:
    """Run any exported file over a batch `x` (float32, first axis = samples): float outputs."""
    x = np.asarray(x, np.float32)
    if path.suffix == ".onnx":
        import onnxruntime as ort

        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        rows = [sess.run(None, {name: x[i : i + 1]}) for i in range(len(x))]
        return [
            np.concatenate([r[k] for r in rows]).astype(np.float32) for k in range(len(rows[0]))
        ]
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path))
    interp.allocate_tensors()
    ind = interp.get_input_details()[0]
    outs = interp.get_output_details()
    results: list[list[np.ndarray]] = [[] for _ in outs]
    for i in range(len(x)):
        row = x[i : i + 1]
        if ind["dtype"] != np.float32:
            scale, zp = ind["quantization"]
            row = np.clip(np.rint(row / scale + zp), -128, 127).astype(ind["dtype"])
        interp.set_tensor(ind["index"], row)
        interp.invoke()
        for k, od in enumerate(outs):
            val = interp.get_tensor(od["index"])
            if od["dtype"] != np.float32:
                scale, zp = od["quantization"]
                val = (val.astype(np.float32) - zp) * scale
            results[k].append(val.astype(np.float32))
    return [np.concatenate(r) for r in results]


def _output_order(path: Path, names: tuple[str, ...]) -> list[int]:
    """TFLite may reorder outputs; map manifest order to the file's order by name."""
    if path.suffix == ".onnx" or len(names) == 1:
        return list(range(len(names)))
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path))
    file_names = [d["name"] for d in interp.get_output_details()]
    order = []
    for n in names:
        hits = [i for i, fn in enumerate(file_names) if n in fn]
        order.append(hits[0] if hits else len(order))
    return order


def _warn_input_precision(calibration: np.ndarray, int8io: Path) -> None:
    from ai_edge_litert.interpreter import Interpreter

    scale = Interpreter(model_path=str(int8io)).get_input_details()[0]["quantization"][0]
    flat = calibration.reshape(-1, calibration.shape[-1]) if calibration.ndim > 2 else calibration
    spread = flat.std(axis=0)
    weak = [int(i) for i in np.nonzero(spread < 4 * scale)[0]]
    if weak:
        print(
            f"WARNING: input scale {scale:.4g}: features {weak} vary by < 4 int8 steps;"
            " pre-scale them to comparable ranges",
            file=sys.stderr,
        )


def export_model(
    out_dir: Path,
    *,
    name: str,
    version: str,
    task: str,
    description: str,
    keras_model: Any,
    calibration: np.ndarray,
    golden_inputs: np.ndarray,
    preprocessing: dict[str, Any],
    training: dict[str, Any],
    quality: dict[str, Any],
    input_name: str = "input",
    output_names: tuple[str, ...] = ("output",),
) -> ExportResult:
    """Quantize and write every file of the model plus its manifest; returns what was written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    calibration = np.asarray(calibration, np.float32)
    golden_inputs = np.asarray(golden_inputs, np.float32)
    input_shape = tuple(int(d) for d in calibration.shape[1:])

    tflite = out_dir / "model.tflite"
    tflite.write_bytes(_tflite_bytes(keras_model, calibration, int8_io=False))
    int8io = out_dir / "model_int8io.tflite"
    int8io.write_bytes(_tflite_bytes(keras_model, calibration, int8_io=True))
    float_onnx = out_dir / "eval" / "float.onnx"
    _float_onnx(keras_model, input_shape, input_name, float_onnx)
    onnx_path = out_dir / "model.onnx"
    quantize_onnx(float_onnx, onnx_path, calibration)
    _warn_input_precision(calibration, int8io)

    # Expected outputs are those of the shipped int8 model; every file must reproduce them within
    # a tolerance set from how far the formats are seen to differ on these very inputs.
    per_file: dict[str, list[np.ndarray]] = {}
    for fname in GOLDEN_FILE_ORDER:
        path = out_dir / fname
        outs = evaluate_file(path, golden_inputs)
        order = _output_order(path, output_names)
        per_file[fname] = [outs[i] for i in order]
    reference = per_file["model.tflite"]
    out_specs = [
        {"name": out_name, "shape": [1, *reference[k].shape[1:]], "dtype": "float32"}
        for k, out_name in enumerate(output_names)
    ]
    tolerance = golden_tolerance(per_file, reference)
    golden = [
        {
            "inputs": [golden_inputs[i : i + 1].tolist()],
            "outputs": [reference[k][i : i + 1].tolist() for k in range(len(output_names))],
            "tolerance": tolerance,
        }
        for i in range(len(golden_inputs))
    ]
    files = [
        {"format": "tflite", "path": "model.tflite", "io": "float32"},
        {"format": "tflite", "path": "model_int8io.tflite", "io": "int8"},
        {"format": "onnx", "path": "model.onnx", "io": "float32"},
    ]
    for f in files:
        p = out_dir / str(f["path"])
        f.update({"sha256": _sha256(p), "size": p.stat().st_size})
        f.setdefault("accelerator", "cpu")
    sizes = {
        "float_onnx_bytes": float_onnx.stat().st_size,
        "int8_tflite_bytes": tflite.stat().st_size,
        "int8_onnx_bytes": onnx_path.stat().st_size,
        "parameters": int(keras_model.count_params()),
    }
    manifest: dict[str, Any] = {
        "schema_version": 1,
        "name": name,
        "version": version,
        "task": task,
        "description": description,
        "files": files,
        "inputs": [{"name": input_name, "shape": [1, *input_shape], "dtype": "float32"}],
        "outputs": out_specs,
        "preprocessing": preprocessing,
        "golden": golden,
        "quality": {**sizes, **quality},
        "training": training,
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return ExportResult(out_dir, manifest, tflite, int8io, onnx_path, float_onnx)


def golden_tolerance(per_file: dict[str, list[np.ndarray]], reference: list[np.ndarray]) -> float:
    """How far a file may stray from the reference outputs: twice the largest difference seen
    between the formats on the golden inputs, at least 2 % of the largest output and 0.001."""
    tolerances = []
    for k, ref in enumerate(reference):
        spread = max(float(np.max(np.abs(outs[k] - ref))) for outs in per_file.values())
        magnitude = float(np.max(np.abs(ref))) or 1.0
        tolerances.append(max(2.0 * spread, 0.02 * magnitude, 1e-3))
    return max(tolerances)


def update_quality(out_dir: Path, quality: dict[str, Any]) -> None:
    """Merge `quality` into the manifest's quality figures (after evaluating the exported files)."""
    path = out_dir / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["quality"] = {**manifest.get("quality", {}), **quality}
    path.write_text(json.dumps(manifest, indent=1) + "\n")


def print_table(rows: list[dict[str, Any]]) -> None:
    """Print rows of equal keys as an aligned text table (the end of every training run)."""
    if not rows:
        return
    keys = list(rows[0])
    widths = [max(len(str(k)), *(len(_fmt(r[k])) for r in rows)) for k in keys]
    print("  ".join(str(k).ljust(w) for k, w in zip(keys, widths, strict=False)))
    for r in rows:
        print("  ".join(_fmt(r[k]).ljust(w) for k, w in zip(keys, widths, strict=False)))


def _fmt(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)
