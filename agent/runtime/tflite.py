"""LiteRT backend for .tflite files (ai-edge-litert, or tflite-runtime where a board ships that).

The fast path keeps one numpy view of every input and output tensor for the model's lifetime and
calls the interpreter wrapper's `Invoke` directly. The public `Interpreter.invoke()` refuses to run
while any view exists (it checks the wrapper's refcount), which is why `tensor(i)()` is normally
rebuilt around each call; but the arena only moves on `allocate_tensors`/`resize_tensor_input`,
which this class never calls after loading, and `bind` checks the views stay put across an invoke.
Float-I/O files then cost one copy in and one copy out; int8-I/O files are quantized straight into
the input view with preallocated `out=` operations (see quant.py).

Measured with agent.runtime.measure on the 2-core dev VM (waveform_classifier, p50): plain
set_tensor/invoke/get_tensor 3.7 us, this fast path 2.5 us on the float-I/O file; on the int8-I/O
file 5.8 us with quantization included, against 15 us for numpy expressions around the plain API.
Float I/O is therefore what `load_model` prefers.
"""

from __future__ import annotations

import functools
import importlib
import logging
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import numpy.typing as npt

from agent.errors import ModelError
from agent.runtime.base import FastPath, FloatArray, Model, TensorSpec
from agent.runtime.quant import (
    SUPPORTED_DTYPES,
    Dequantizer,
    Quantizer,
    check_buffers,
    from_tensor,
    to_tensor,
)

_log = logging.getLogger(__name__)
_MODULES = ("ai_edge_litert.interpreter", "tflite_runtime.interpreter")


@functools.cache
def interpreter_module() -> ModuleType:
    """The LiteRT interpreter module: ai_edge_litert, else tflite_runtime; ModelError if neither."""
    reasons = []
    for name in _MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:  # tflite-runtime under numpy 2 fails here too
            reasons.append(f"{name}: {exc}")
            continue
        _log.info("LiteRT backend: %s", name)
        return module
    raise ModelError("no LiteRT interpreter importable (" + "; ".join(reasons) + ")")


def litert_available() -> bool:
    """True when a LiteRT interpreter module imports on this machine."""
    try:
        interpreter_module()
    except ModelError:
        return False
    return True


def _spec(detail: dict[str, Any]) -> TensorSpec:
    scale, zero_point = detail["quantization"]
    return TensorSpec(
        name=str(detail["name"]),
        shape=tuple(int(d) for d in detail["shape"]),
        dtype=np.dtype(detail["dtype"]).name,
        scale=float(scale),
        zero_point=int(zero_point),
    )


def _closed() -> None:
    raise ModelError("fast path used after its model was closed")


class TfliteFastPath(FastPath):
    """Copy (or quantize) inputs into the tensor views, invoke, copy (or dequantize) outputs."""

    def __init__(
        self,
        inputs: tuple[FloatArray, ...],
        outputs: tuple[FloatArray, ...],
        in_views: tuple[npt.NDArray[np.generic], ...],
        out_views: tuple[npt.NDArray[np.generic], ...],
        specs: tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]],
        invoke: Callable[[], object],
    ) -> None:
        self.inputs = inputs
        self.outputs = outputs
        in_specs, out_specs = specs
        # `view[...] = buf` measured ~0.7 us cheaper per tensor than np.copyto or a partial of it.
        self._copy_in = tuple(
            (v, b) for v, b, s in zip(in_views, inputs, in_specs, strict=True) if _is_float(s)
        )
        self._quant_in = tuple(
            Quantizer(b, v, s).run
            for v, b, s in zip(in_views, inputs, in_specs, strict=True)
            if not _is_float(s)
        )
        self._copy_out = tuple(
            (b, v) for v, b, s in zip(out_views, outputs, out_specs, strict=True) if _is_float(s)
        )
        self._dequant_out = tuple(
            Dequantizer(v, b, s).run
            for v, b, s in zip(out_views, outputs, out_specs, strict=True)
            if not _is_float(s)
        )
        self._invoke = invoke

    def run(self) -> None:
        """Read `inputs`, invoke, fill `outputs`; allocates nothing."""
        for view, buf in self._copy_in:
            view[...] = buf
        for quantize in self._quant_in:
            quantize()
        self._invoke()
        for out, view in self._copy_out:
            out[...] = view
        for dequantize in self._dequant_out:
            dequantize()

    def release(self) -> None:
        """Drop every reference into the interpreter; `run` then raises ModelError."""
        self._copy_in = self._copy_out = ()
        self._quant_in = self._dequant_out = ()
        self._invoke = _closed


def _is_float(spec: TensorSpec) -> bool:
    return spec.dtype == "float32"


class TfliteModel(Model):
    """A .tflite file in a LiteRT interpreter, optionally with delegates (XNNPACK by default).

    Not thread-safe: `infer` and fast paths of one model must run from one thread at a time.
    """

    backend = "tflite"

    def __init__(
        self,
        path: Path,
        *,
        name: str,
        version: str,
        threads: int = 1,
        delegates: Sequence[object] = (),
        accelerator: str = "cpu",
    ) -> None:
        self.path = str(path)
        self.name = name
        self.version = version
        self.accelerator = accelerator
        module = interpreter_module()
        try:
            interp = module.Interpreter(
                model_path=self.path,
                num_threads=threads,
                experimental_delegates=list(delegates) or None,
            )
            interp.allocate_tensors()
            # Outputs computed with dynamic shapes (e.g. a batch dim of -1 in the signature)
            # only get memory on the first invoke; views must be taken after it.
            interp.invoke()
            in_details = interp.get_input_details()
            out_details = interp.get_output_details()
        except (ValueError, RuntimeError, OSError) as exc:
            raise ModelError(f"LiteRT cannot load it: {_first_line(exc)}", path=self.path) from None
        self.inputs = tuple(_spec(d) for d in in_details)
        self.outputs = tuple(_spec(d) for d in out_details)
        for spec in self.inputs + self.outputs:
            if spec.dtype not in SUPPORTED_DTYPES:
                supported = ", ".join(SUPPORTED_DTYPES)
                reason = f"tensor {spec.name!r} is {spec.dtype}; supported: {supported}"
                raise ModelError(reason, path=self.path)
        self._interp: Any = interp
        self._raw: Any = getattr(interp, "_interpreter", None)
        if not all(hasattr(self._raw, a) for a in ("Invoke", "SetTensor", "GetTensor", "tensor")):
            raise ModelError(f"unsupported LiteRT build: {module.__name__} has no wrapper API")
        self._in_index = tuple(int(d["index"]) for d in in_details)
        self._out_index = tuple(int(d["index"]) for d in out_details)
        self._in_views = tuple(self._view(i) for i in self._in_index)
        self._out_views = tuple(self._view(i) for i in self._out_index)
        self._bound: list[weakref.ref[TfliteFastPath]] = []

    def _view(self, index: int) -> npt.NDArray[np.generic]:
        view: npt.NDArray[np.generic] = self._raw.tensor(self._raw, index)
        return view

    def _live(self) -> Any:
        if self._raw is None:
            raise ModelError("model is closed", path=self.path)
        return self._raw

    def infer(self, *arrays: npt.ArrayLike) -> list[FloatArray]:
        """Run once on float (or raw int8) inputs and return float32 outputs; allocates."""
        raw = self._live()
        self._check_arity(arrays)
        for spec, index, values in zip(self.inputs, self._in_index, arrays, strict=True):
            raw.SetTensor(index, to_tensor(values, spec, path=self.path))
        try:
            raw.Invoke()
        except RuntimeError as exc:
            raise ModelError(f"LiteRT invoke failed: {_first_line(exc)}", path=self.path) from None
        return [
            from_tensor(raw.GetTensor(index, 0), spec)
            for spec, index in zip(self.outputs, self._out_index, strict=True)
        ]

    def bind(self, inputs: Sequence[FloatArray], outputs: Sequence[FloatArray]) -> FastPath:
        """Build a fast path over these float32 buffers; may be called again on the same buffers."""
        raw = self._live()
        ins = check_buffers(self.inputs, inputs, "inputs", path=self.path)
        outs = check_buffers(self.outputs, outputs, "outputs", path=self.path)
        self._check_views_stable(raw)
        fast = TfliteFastPath(
            ins, outs, self._in_views, self._out_views, (self.inputs, self.outputs), raw.Invoke
        )
        self._bound = [r for r in self._bound if r() is not None]
        self._bound.append(weakref.ref(fast))
        return fast

    def _check_views_stable(self, raw: Any) -> None:
        # Dynamic tensors are reallocated only when they grow, so with fixed input shapes their
        # memory stays put; checked here rather than trusted, since a view must never dangle.
        raw.Invoke()
        for index, view in zip(
            self._in_index + self._out_index, self._in_views + self._out_views, strict=True
        ):
            if self._view(index).ctypes.data != view.ctypes.data:
                raise ModelError(
                    "tensor buffers move between invokes (dynamic shapes); "
                    "the fast path needs a model with static shapes",
                    path=self.path,
                )

    def close(self) -> None:
        """Release the interpreter; fast paths bound to this model stop working."""
        for ref in self._bound:
            fast = ref()
            if fast is not None:
                fast.release()
        self._bound = []
        # Views first: the interpreter frees its delegates on deletion and must be the last
        # holder of the wrapper by then.
        self._in_views = ()
        self._out_views = ()
        self._raw = None
        self._interp = None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
