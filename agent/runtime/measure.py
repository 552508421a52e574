"""Per-call cost of the runtime's own plain API against our fast path, in one interleaved run.

`python -m agent.runtime.measure [MODELS_DIR] [-n N]` prints one row per model file.
"""

from __future__ import annotations

import argparse
import gc
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from agent.config.sections import RuntimeConfig
from agent.runtime.base import Model
from agent.runtime.loader import load_model
from agent.runtime.manifest import load_manifest
from agent.runtime.quant import quantize, to_tensor

Timed = Callable[[], object]


def bare_vs_fast(
    folder: Path,
    fmt: Literal["tflite", "onnx"],
    n: int = 20000,
    *,
    io: Literal["float32", "int8"] | None = None,
    threads: int = 1,
) -> dict[str, Any]:
    """p50/p99 in us of plain set_tensor/invoke/get_tensor (or session.run) vs `FastPath.run`.

    Both run on CPU with `threads`, interleaved call by call (alternating which goes first) with
    the garbage collector off. For int8-I/O files, `numpy_quant_*` is the plain API with float
    values quantized and dequantized by ordinary numpy expressions around it.
    """
    model = load_model(folder, RuntimeConfig(accelerator="cpu", threads=threads), fmt=fmt, io=io)
    try:
        values = _sample_inputs(folder, model)
        fast = model.fast_path()
        for buf, v in zip(fast.inputs, values, strict=True):
            buf[...] = v.reshape(buf.shape)
        paths: dict[str, Timed] = {"bare": _bare(model, values, threads), "fast": fast.run}
        paths["infer"] = lambda: model.infer(*values)
        if model.inputs[0].dtype != "float32":
            paths["numpy_quant"] = _numpy_quant(model, values, threads)
        stats = _interleaved(paths, n)
    finally:
        model.close()
    row: dict[str, Any] = {
        "model": model.name,
        "version": model.version,
        "format": fmt,
        "file": Path(model.path).name,
        "io": model.inputs[0].dtype,
        "n": n,
    }
    for name, (p50, p99) in stats.items():
        row[f"{name}_p50_us"] = round(p50, 2)
        row[f"{name}_p99_us"] = round(p99, 2)
    return row


def _sample_inputs(folder: Path, model: Model) -> list[npt.NDArray[np.float32]]:
    golden = load_manifest(folder).golden
    if golden:
        return [np.asarray(v, np.float32) for v in golden[0].inputs]
    rng = np.random.default_rng(0)
    return [rng.standard_normal(s.shape).astype(np.float32) for s in model.inputs]


def _bare(model: Model, values: list[npt.NDArray[np.float32]], threads: int) -> Timed:
    # A second, plain instance of the same file, driven only through the public API.
    feeds = [to_tensor(v, s, path=model.path) for v, s in zip(values, model.inputs, strict=True)]
    if model.backend == "onnx":
        import onnxruntime as ort

        from agent.runtime.onnx import session_options

        session = ort.InferenceSession(model.path, session_options(threads))
        named = {s.name: f for s, f in zip(model.inputs, feeds, strict=True)}
        return lambda: session.run(None, named)
    interp = _plain_interpreter(model.path, threads)
    ins = [d["index"] for d in interp.get_input_details()]
    outs = [d["index"] for d in interp.get_output_details()]

    def plain() -> None:
        for i, f in zip(ins, feeds, strict=True):
            interp.set_tensor(i, f)
        interp.invoke()
        for o in outs:
            interp.get_tensor(o)

    return plain


def _numpy_quant(model: Model, values: list[npt.NDArray[np.float32]], threads: int) -> Timed:
    interp = _plain_interpreter(model.path, threads)
    in_details, out_details = interp.get_input_details(), interp.get_output_details()
    ins = [(d["index"], s) for d, s in zip(in_details, model.inputs, strict=True)]
    outs = [(d["index"], s) for d, s in zip(out_details, model.outputs, strict=True)]
    floats = [v.reshape(s.shape) for v, (_, s) in zip(values, ins, strict=True)]

    def around() -> None:
        for (i, s), v in zip(ins, floats, strict=True):
            interp.set_tensor(i, quantize(v, s))
        interp.invoke()
        for o, s in outs:
            (interp.get_tensor(o).astype(np.float32) - s.zero_point) * s.scale

    return around


def _plain_interpreter(path: str, threads: int) -> Any:
    from agent.runtime.tflite import interpreter_module

    interp = interpreter_module().Interpreter(model_path=path, num_threads=threads)
    interp.allocate_tensors()
    return interp


def _interleaved(paths: dict[str, Timed], n: int) -> dict[str, tuple[float, float]]:
    names = list(paths)
    calls = [paths[k] for k in names]
    samples = np.zeros((len(calls), n), np.int64)
    clock = time.perf_counter_ns
    for f in calls:  # warm up caches and lazy allocations
        for _ in range(200):
            f()
    gc.collect()
    gc.disable()
    try:
        for i in range(n):
            order = range(len(calls)) if i % 2 == 0 else range(len(calls) - 1, -1, -1)
            for j in order:
                t0 = clock()
                calls[j]()
                samples[j, i] = clock() - t0
    finally:
        gc.enable()
    return {
        k: (float(np.percentile(samples[j], 50)) / 1e3, float(np.percentile(samples[j], 99)) / 1e3)
        for j, k in enumerate(names)
    }


def main(argv: list[str] | None = None) -> None:
    """Print bare-vs-fast figures for every file of every model under a models directory."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("models_dir", nargs="?", default="models", type=Path)
    parser.add_argument("-n", type=int, default=20000, help="calls per path")
    args = parser.parse_args(argv)
    keys = ("bare", "fast", "infer", "numpy_quant")
    print("model file format io " + " ".join(f"{k}_p50/p99_us" for k in keys))
    for folder in sorted(p.parent for p in args.models_dir.glob("*/manifest.json")):
        manifest = load_manifest(folder)
        for entry in manifest.files:
            if entry.accelerator != "cpu":
                continue
            row = bare_vs_fast(folder, entry.format, args.n, io=entry.io)
            figs = [
                f"{row[k + '_p50_us']}/{row[k + '_p99_us']}" if k + "_p50_us" in row else "-"
                for k in keys
            ]
            print(manifest.name, entry.path, entry.format, row["io"], " ".join(figs), flush=True)


if __name__ == "__main__":
    main()
