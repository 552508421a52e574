"""The baseline a tick is compared with: the same model file driven by its runtime's plain API.

LiteRT: `set_tensor` / `invoke` / `get_tensor` on a fresh `Interpreter`; ONNX Runtime:
`session.run` on a fresh `InferenceSession`. No agent code in between, same thread count.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from agent.engine.histogram import Histogram

BareCall = Callable[[], object]


def bare_call(backend: str, path: str, *, threads: int = 1) -> tuple[BareCall, Callable[[], None]]:
    """A zero-argument call running the model file once via the plain API, and a close function."""
    if backend == "onnx":
        return _onnx_call(path, threads)
    return _tflite_call(path, threads)


def _sample(shape: tuple[int, ...], dtype: Any, seed: int) -> Any:
    rng = np.random.default_rng(seed)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, shape, endpoint=True).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


def _tflite_call(path: str, threads: int) -> tuple[BareCall, Callable[[], None]]:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # boards that ship tflite-runtime instead
        from tflite_runtime.interpreter import Interpreter

    interp = Interpreter(model_path=path, num_threads=threads)
    interp.allocate_tensors()
    feeds = [
        (d["index"], _sample(tuple(d["shape"]), d["dtype"], i))
        for i, d in enumerate(interp.get_input_details())
    ]
    outs = [d["index"] for d in interp.get_output_details()]
    set_tensor, invoke, get_tensor = interp.set_tensor, interp.invoke, interp.get_tensor

    def call() -> object:
        for index, value in feeds:
            set_tensor(index, value)
        invoke()
        return [get_tensor(o) for o in outs]

    return call, lambda: None


def _onnx_call(path: str, threads: int) -> tuple[BareCall, Callable[[], None]]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    types = {"tensor(float)": np.float32, "tensor(int8)": np.int8, "tensor(uint8)": np.uint8}
    feed = {
        i.name: _sample(
            tuple(d if isinstance(d, int) else 1 for d in i.shape), types.get(i.type, np.float32), n
        )
        for n, i in enumerate(session.get_inputs())
    }
    run = session.run

    def call() -> object:
        return run(None, feed)

    return call, lambda: None


def time_tight(call: BareCall, *, max_calls: int = 20000, max_s: float = 1.0) -> Histogram:
    """Per-call times of `call` in a tight loop (after a short warm-up)."""
    for _ in range(200):
        call()
    hist = Histogram()
    perf = time.perf_counter_ns
    end = perf() + int(max_s * 1e9)
    for _ in range(max_calls):
        start = perf()
        call()
        stop = perf()
        hist.record(stop - start)
        if stop > end:
            break
    return hist
