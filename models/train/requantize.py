"""Quantize a waveform-family model's ONNX file again, without TensorFlow, and refresh its manifest.

    python -m models.train.requantize FOLDER --seed SEED [--windows N]

The float network is FOLDER/eval/float.onnx when the folder kept it (the shipped models), else the
QDQ file's own weights dequantized (the OTA test models, which keep no float file). Calibration is
the first 500 of `N` windows drawn with the training seed, as the training scripts draw them.
Golden inputs and outputs (those of model.tflite) stay; the ONNX file's entry and the golden
tolerance are rewritten as `export_model` would write them.

This is how the ONNX files moved to 7-bit weights (export.quantize_onnx says why) without
retraining: the TFLite files, the reference of every golden vector, did not change.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from models.train import waveform as wf
from models.train.export import evaluate_file, golden_tolerance, quantize_onnx


def float_from_qdq(qdq: Path, out: Path) -> None:
    """A float ONNX graph from a QDQ one: weights dequantized, activation Q/DQ pairs removed."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(qdq))
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    producers = {o: n for n in graph.node for o in n.output}
    dropped = []
    clips: dict[int, Any] = {}
    for node in graph.node:
        if node.op_type != "DequantizeLinear":
            continue
        source = node.input[0]
        if source in inits:  # a weight: fold it to a float constant under the DQ's output name
            q = numpy_helper.to_array(inits[source]).astype(np.float32)
            scale = numpy_helper.to_array(inits[node.input[1]]).astype(np.float32)
            zero = numpy_helper.to_array(inits[node.input[2]]).astype(np.float32)
            axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
            shape = [1] * q.ndim
            if scale.ndim == 1 and scale.size > 1:
                shape[axis] = scale.size
            value = (q - zero.reshape(shape)) * scale.reshape(shape)
            graph.initializer.append(numpy_helper.from_array(value, node.output[0]))
            dropped.append(node)
        elif source in producers and producers[source].op_type == "QuantizeLinear":
            # The pair clips to the int8 range as well as rounding, and the quantizer relies on
            # that clip (it drops a Relu before an activation range that starts at 0), so the
            # pair becomes a Clip to the same range.
            quant = producers[source]
            scale = float(numpy_helper.to_array(inits[quant.input[1]]))
            zero = float(numpy_helper.to_array(inits[quant.input[2]]))
            low, high = (-128.0 - zero) * scale, (127.0 - zero) * scale
            bounds = [f"{node.output[0]}_low", f"{node.output[0]}_high"]
            for name, value in zip(bounds, (low, high), strict=True):
                graph.initializer.append(numpy_helper.from_array(np.array(value, np.float32), name))
            clip = onnx.helper.make_node("Clip", [quant.input[0], *bounds], [node.output[0]])
            clips[id(node)] = clip
            dropped += [node, quant]
    gone = {id(n) for n in dropped}
    kept = [clips.get(id(n), n) for n in graph.node if id(n) in clips or id(n) not in gone]
    del graph.node[:]
    graph.node.extend(kept)
    onnx.checker.check_model(model)
    onnx.save(model, str(out))


def _windows(n: int, seed: int, window: int) -> tuple[np.ndarray, np.ndarray]:
    old, wf.WINDOW = wf.WINDOW, window
    try:
        return wf.make_windows(n, seed)
    finally:
        wf.WINDOW = old


def requantize(folder: Path, seed: int, windows: int) -> dict[str, float]:
    manifest_path = folder / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    window = int(manifest["inputs"][0]["shape"][-1])
    calibration = _windows(windows, seed, window)[0][:500].astype(np.float32)
    onnx_path = folder / "model.onnx"
    with tempfile.TemporaryDirectory() as tmp:
        float_onnx = folder / "eval" / "float.onnx"
        if not float_onnx.exists():
            float_onnx = Path(tmp) / "float.onnx"
            float_from_qdq(onnx_path, float_onnx)
        quantize_onnx(float_onnx, onnx_path, calibration)
    golden = manifest["golden"]
    inputs = np.concatenate([np.asarray(g["inputs"][0], np.float32) for g in golden])
    reference = [np.concatenate([np.asarray(g["outputs"][0], np.float32) for g in golden])]
    files = [f["path"] for f in manifest["files"] if (folder / f["path"]).exists()]
    per_file = {f: evaluate_file(folder / f, inputs)[:1] for f in files}
    tolerance = golden_tolerance(per_file, reference)
    for g in golden:
        g["tolerance"] = tolerance
    data = onnx_path.read_bytes()

    for entry in manifest["files"]:
        if entry["path"] == "model.onnx":
            entry.update(sha256=hashlib.sha256(data).hexdigest(), size=len(data))
    quality = manifest.get("quality", {})
    if "int8_onnx_bytes" in quality:
        quality["int8_onnx_bytes"] = len(data)
    if "int8_onnx" in quality:  # held-out accuracy, on the windows the training script scores
        x, y = _windows(int(quality["eval_windows"]), wf.EVAL_SEED, window)
        quality["int8_onnx"] = round(wf.accuracy(evaluate_file(onnx_path, x)[0], y), 4)
    manifest_path.write_text(json.dumps(manifest, indent=1) + "\n")
    spread = float(np.max(np.abs(per_file["model.onnx"][0] - reference[0])))
    return {"onnx_vs_reference": spread, "tolerance": tolerance}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--seed", type=int, required=True, help="the training seed")
    parser.add_argument("--windows", type=int, default=40_000, help="windows drawn for training")
    args = parser.parse_args(argv)
    print(args.folder, requantize(args.folder, args.seed, args.windows))


if __name__ == "__main__":
    main()
