"""Checks a new model must pass before it may run: it loads, fits, reproduces its golden vectors."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

import numpy as np

from agent.config.sections import RuntimeConfig
from agent.errors import ModelError, UpdateRejected
from agent.runtime.base import Model
from agent.runtime.manifest import Manifest
from agent.runtime.verify import check_golden

T = TypeVar("T")


def load_candidate(
    folder: Path, runtime: RuntimeConfig, fmt: Literal["tflite", "onnx"] | None = None
) -> Model:
    """Load `folder` on the configured accelerator; UpdateRejected (load_failed) if it cannot."""
    from agent.runtime.loader import load_model

    try:
        return load_model(folder, runtime, fmt=fmt)
    except ModelError as exc:
        raise UpdateRejected(f"model does not load: {exc.reason}", code="load_failed") from None
    except Exception as exc:  # a runtime's own error types: the update is refused, not the agent
        raise UpdateRejected(
            f"model does not load: {type(exc).__name__}: {exc}", code="load_failed"
        ) from None


class _Shaped(Protocol):
    @property
    def inputs(self) -> Any: ...
    @property
    def outputs(self) -> Any: ...


def check_shapes(
    model: _Shaped | Model,
    inputs: Sequence[Sequence[int]],
    outputs: Sequence[Sequence[int]],
    what: str,
) -> None:
    """UpdateRejected (code incompatible) unless the model's I/O shapes are exactly these."""
    got_in = [list(_shape(s)) for s in model.inputs]
    got_out = [list(_shape(s)) for s in model.outputs]
    want_in = [list(s) for s in inputs]
    want_out = [list(s) for s in outputs]
    if got_in != want_in or got_out != want_out:
        raise UpdateRejected(
            f"incompatible model: inputs {got_in} outputs {got_out}, "
            f"{what} needs inputs {want_in} outputs {want_out}",
            code="incompatible",
        )


def _shape(spec: Any) -> Sequence[int]:
    """A TensorSpec's shape, or a shape as the sandbox's probe reports it (a list)."""
    return spec if isinstance(spec, list) else spec.shape


def validate_golden(model: Model, manifest: Manifest) -> int:
    """OTA's golden check: vectors required, an all-zero input must give finite outputs, every
    vector reproduced (agent.runtime.verify.check_golden); returns how many passed, or raises.

    UpdateRejected with code `no_golden` (none to run), `nan` (a NaN or inf output) or `golden`
    (an output off by more than the vector's tolerance, or a vector that does not fit).
    """
    if not manifest.golden:
        raise UpdateRejected(
            "manifest has no golden vectors to validate the model", code="no_golden"
        )
    zeros = [np.zeros(s.shape, np.float32) for s in model.inputs]
    for k, out in enumerate(_infer(model, lambda: model.infer(*zeros), "an all-zero input")):
        if not np.isfinite(out).all():
            raise UpdateRejected(f"emits NaN or inf (output {k} on an all-zero input)", code="nan")
    result = _infer(model, lambda: check_golden(model, manifest.golden), "the golden vectors")
    if result.failure:
        raise UpdateRejected(result.failure, code="nan" if result.non_finite else "golden")
    return len(manifest.golden)


def _infer(model: Model, run: Callable[[], T], what: str) -> T:
    try:
        return run()
    except ModelError as exc:
        raise UpdateRejected(f"{what}: inference failed: {exc.reason}", code="golden") from None
    except Exception as exc:  # malformed input shapes surface as the runtime's own errors
        raise UpdateRejected(f"{what}: inference failed: {exc}", code="golden") from None
