"""Write the hostile model folders the OTA tests try to install; run from the repo root:

    .venv/bin/python tests/ota/data/make_hostile.py [MUTANT.tflite]

- loop: version 1.5.0, one ONNX file whose graph is a `Loop` with a trip count of 2^62 around
  an identity (valid ONNX: ONNX Runtime runs it for hours), then a slice to the [1, 4] output;
- hog: version 1.7.0, one ONNX file that fills a 1 GiB tensor before it answers (a model too big
  for the board's memory);
- crash: version 1.6.0, one .tflite that is the 1.1.0 model with 3 bytes changed so that LiteRT
  dies with a signal on load or invoke (found by a mutation search, about 2 in 1,200 mutants:
  pass the mutant found; without one the folder is left as it is).

All carry the 1.0.0 manifest's inputs, outputs and golden vectors, so nothing but running them
can tell they are bad.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

DATA = Path(__file__).resolve().parent
ROOT = DATA.parents[2]
SHIPPED = ROOT / "models" / "waveform_classifier" / "manifest.json"


def _folder(name: str, version: str, what: str, files: dict[str, tuple[str, bytes]]) -> None:
    out = DATA / name
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    entries = []
    for path, (fmt, data) in files.items():
        (out / path).write_bytes(data)
        entries.append(
            {
                "format": fmt,
                "path": path,
                "io": "float32",
                "sha256": hashlib.sha256(data).hexdigest(),
                "size": len(data),
                "accelerator": "cpu",
            }
        )
    manifest = json.loads(SHIPPED.read_text())
    manifest.update(version=version, description=f"OTA test model: {what}", files=entries)
    manifest["quality"] = {}
    manifest["training"] = {"script": "tests/ota/data/make_hostile.py"}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")


def endless_loop() -> bytes:
    """An ONNX graph [1, 16] -> [1, 4] that loops 2^62 times first."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            helper.make_node("Identity", ["v_in"], ["v_out"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("v_in", TensorProto.FLOAT, [1, 16]),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("v_out", TensorProto.FLOAT, [1, 16]),
        ],
    )
    consts = [
        numpy_helper.from_array(np.array(1 << 62, np.int64), "trips"),
        numpy_helper.from_array(np.array(True), "go"),
        numpy_helper.from_array(np.array([0], np.int64), "starts"),
        numpy_helper.from_array(np.array([4], np.int64), "ends"),
        numpy_helper.from_array(np.array([1], np.int64), "axes"),
    ]
    graph = helper.make_graph(
        [
            helper.make_node("Loop", ["trips", "go", "input"], ["looped"], body=body),
            helper.make_node("Slice", ["looped", "starts", "ends", "axes"], ["output"]),
        ],
        "endless",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 16])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 4])],
        initializer=consts,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return bytes(model.SerializeToString())


def memory_hog() -> bytes:
    """An ONNX graph [1, 16] -> [1, 4] that first fills and sums a 1 GiB tensor."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    consts = [
        numpy_helper.from_array(np.array([1 << 28], np.int64), "huge"),
        numpy_helper.from_array(np.array([0], np.int64), "starts"),
        numpy_helper.from_array(np.array([4], np.int64), "ends"),
        numpy_helper.from_array(np.array([1], np.int64), "axes"),
    ]
    graph = helper.make_graph(
        [
            # The fill depends on the input, so no optimizer folds it away at load.
            helper.make_node("ReduceMax", ["input"], ["peak"], keepdims=0),
            helper.make_node("Expand", ["peak", "huge"], ["filled"]),
            helper.make_node("ReduceSum", ["filled"], ["total"], keepdims=0),
            helper.make_node("Mul", ["total", "zero"], ["nothing"]),
            helper.make_node("Slice", ["input", "starts", "ends", "axes"], ["head"]),
            helper.make_node("Add", ["head", "nothing"], ["output"]),
        ],
        "hog",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 16])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 4])],
        initializer=[*consts, numpy_helper.from_array(np.array(0.0, np.float32), "zero")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return bytes(model.SerializeToString())


def main(argv: list[str]) -> None:
    """Write `loop` and `hog`, and `crash` from the mutant given."""
    _folder("loop", "1.5.0", "an endless ONNX Loop", {"model.onnx": ("onnx", endless_loop())})
    _folder("hog", "1.7.0", "a 1 GiB fill", {"model.onnx": ("onnx", memory_hog())})
    if argv:
        mutant = Path(argv[0]).read_bytes()
        _folder(
            "crash", "1.6.0", "1.1.0 with 3 bytes changed", {"model.tflite": ("tflite", mutant)}
        )


if __name__ == "__main__":
    main(sys.argv[1:])
