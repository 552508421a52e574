"""ONNX Runtime backend for .onnx files (QDQ int8 with float I/O, or plain float).

The fast path is an IOBinding over the caller's own buffers: inputs bound with `bind_cpu_input`
(ORT reads the numpy memory in place) and outputs bound by pointer, so a run copies nothing in
Python. It calls the session's C++ `run_with_iobinding` directly: the Python wrapper adds WebGPU
graph-capture checks that cost about 1 us per call and never apply on these providers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from agent.errors import ModelError
from agent.runtime.base import FastPath, FloatArray, Model, TensorSpec
from agent.runtime.quant import check_buffers, from_tensor, to_tensor

CPU_PROVIDER = "CPUExecutionProvider"
_DTYPES = {"tensor(float)": "float32"}


def session_options(threads: int) -> Any:
    """SessionOptions for a hot loop: `threads` intra-op, one inter-op, sequential, all opts."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3  # errors only: ORT warns about every unused initializer
    return opts


def _spec(arg: Any, hint: Sequence[int] | None, path: str) -> TensorSpec:
    dtype = _DTYPES.get(arg.type)
    if dtype is None:
        raise ModelError(
            f"tensor {arg.name!r} is {arg.type}; export ONNX models with float I/O "
            "(QDQ keeps the int8 arithmetic inside the graph)",
            path=path,
        )
    shape = list(arg.shape)
    for i, dim in enumerate(shape):
        if not isinstance(dim, int) or dim < 0:
            if hint is None or len(hint) != len(shape):
                raise ModelError(
                    f"tensor {arg.name!r} has symbolic shape {shape} and no manifest shape",
                    path=path,
                )
            shape[i] = int(hint[i])
    return TensorSpec(name=str(arg.name), shape=tuple(int(d) for d in shape), dtype=dtype)


class OnnxFastPath(FastPath):
    """`run()` is one `run_with_iobinding` over the caller's pre-bound buffers."""

    def __init__(
        self,
        inputs: tuple[FloatArray, ...],
        outputs: tuple[FloatArray, ...],
        run: Callable[[Any, Any], object],
        binding: Any,
        keep: object,
    ) -> None:
        self.inputs = inputs
        self.outputs = outputs
        self._run = run
        self._binding = binding
        self._keep = keep  # the Python IOBinding, which holds the input arrays ORT reads

    def run(self) -> None:
        """Run the session on the bound buffers; allocates nothing in Python."""
        self._run(self._binding, None)


class OnnxModel(Model):
    """An .onnx file in an ONNX Runtime InferenceSession on the given execution providers."""

    backend = "onnx"

    def __init__(
        self,
        path: Path,
        *,
        name: str,
        version: str,
        threads: int = 1,
        providers: Sequence[str] = (CPU_PROVIDER,),
        shape_hints: tuple[Sequence[Sequence[int]], Sequence[Sequence[int]]] | None = None,
    ) -> None:
        import onnxruntime as ort

        self.path = str(path)
        self.name = name
        self.version = version
        try:
            session = ort.InferenceSession(
                self.path, session_options(threads), providers=list(providers)
            )
        except Exception as exc:  # ORT raises its own pybind types (InvalidProtobuf, Fail, ...)
            reason = f"ONNX Runtime cannot load it: {_first_line(exc)}"
            raise ModelError(reason, path=self.path) from None
        self.providers: tuple[str, ...] = tuple(session.get_providers())
        first = self.providers[0]
        self.accelerator = "cpu" if first == CPU_PROVIDER else f"npu:{first}"
        in_hints, out_hints = shape_hints or ((), ())
        self.inputs = tuple(
            _spec(a, _hint(in_hints, i), self.path) for i, a in enumerate(session.get_inputs())
        )
        self.outputs = tuple(
            _spec(a, _hint(out_hints, i), self.path) for i, a in enumerate(session.get_outputs())
        )
        self._session: Any = session

    def _live(self) -> Any:
        if self._session is None:
            raise ModelError("model is closed", path=self.path)
        return self._session

    def infer(self, *arrays: npt.ArrayLike) -> list[FloatArray]:
        """Run once on float inputs and return float32 outputs; allocates."""
        session = self._live()
        self._check_arity(arrays)
        feeds = {
            spec.name: to_tensor(values, spec, path=self.path)
            for spec, values in zip(self.inputs, arrays, strict=True)
        }
        try:
            results = session.run(None, feeds)
        except Exception as exc:
            reason = f"ONNX Runtime run failed: {_first_line(exc)}"
            raise ModelError(reason, path=self.path) from None
        return [from_tensor(np.asarray(r), s) for r, s in zip(results, self.outputs, strict=True)]

    def bind(self, inputs: Sequence[FloatArray], outputs: Sequence[FloatArray]) -> FastPath:
        """Bind the caller's float32 buffers to a new IOBinding (zero-copy on CPU)."""
        session = self._live()
        ins = check_buffers(self.inputs, inputs, "inputs", path=self.path)
        outs = check_buffers(self.outputs, outputs, "outputs", path=self.path)
        binding = session.io_binding()
        for spec, buf in zip(self.inputs, ins, strict=True):
            binding.bind_cpu_input(spec.name, buf)
        for spec, buf in zip(self.outputs, outs, strict=True):
            binding.bind_output(spec.name, "cpu", 0, np.float32, list(buf.shape), buf.ctypes.data)
        raw_session = getattr(session, "_sess", None)
        raw_binding = getattr(binding, "_iobinding", None)
        if raw_session is not None and raw_binding is not None:
            return OnnxFastPath(ins, outs, raw_session.run_with_iobinding, raw_binding, binding)
        return OnnxFastPath(ins, outs, session.run_with_iobinding, binding, binding)

    def close(self) -> None:
        """Drop the session (fast paths keep what they bound alive until they are dropped)."""
        self._session = None


def _hint(hints: Sequence[Sequence[int]], i: int) -> Sequence[int] | None:
    return hints[i] if i < len(hints) else None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
