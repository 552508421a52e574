"""Checks a new model must pass before it may run: it loads, fits, reproduces its golden vectors."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from agent.config.sections import RuntimeConfig
from agent.errors import ModelError, UpdateRejected
from agent.runtime.base import Model
from agent.runtime.manifest import Manifest


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


def check_shapes(
    model: Model, inputs: Sequence[Sequence[int]], outputs: Sequence[Sequence[int]], what: str
) -> None:
    """UpdateRejected (code incompatible) unless the model's I/O shapes are exactly these."""
    got_in = [list(s.shape) for s in model.inputs]
    got_out = [list(s.shape) for s in model.outputs]
    want_in = [list(s) for s in inputs]
    want_out = [list(s) for s in outputs]
    if got_in != want_in or got_out != want_out:
        raise UpdateRejected(
            f"incompatible model: inputs {got_in} outputs {got_out}, "
            f"{what} needs inputs {want_in} outputs {want_out}",
            code="incompatible",
        )


def check_golden(model: Model, manifest: Manifest) -> int:
    """Run every golden vector (and an all-zero input); return how many passed, or raise.

    UpdateRejected with code `no_golden` (none to run), `nan` (a NaN or inf output) or `golden`
    (an output off by more than the vector's tolerance).
    """
    if not manifest.golden:
        raise UpdateRejected(
            "manifest has no golden vectors to validate the model", code="no_golden"
        )
    zeros = [np.zeros(s.shape, np.float32) for s in model.inputs]
    _finite(model, zeros, "an all-zero input")
    for i, g in enumerate(manifest.golden):
        arrays = [np.asarray(x, np.float32) for x in g.inputs]
        outs = _finite(model, arrays, f"golden vector {i}")
        if len(outs) != len(g.outputs):
            raise UpdateRejected(
                f"golden vector {i}: model has {len(outs)} outputs, vector {len(g.outputs)}",
                code="golden",
            )
        for k, (got, want) in enumerate(zip(outs, g.outputs, strict=True)):
            expected = np.asarray(want, np.float32)
            if got.shape != expected.shape:
                raise UpdateRejected(
                    f"golden vector {i}, output {k}: shape {list(got.shape)}, "
                    f"expected {list(expected.shape)}",
                    code="golden",
                )
            err = float(np.max(np.abs(got - expected)))
            if err > g.tolerance:
                raise UpdateRejected(
                    f"fails golden vector {i}, output {k}: off by {err:.4g} "
                    f"(tolerance {g.tolerance:.4g})",
                    code="golden",
                )
    return len(manifest.golden)


def _finite(model: Model, arrays: list[np.ndarray], what: str) -> list[np.ndarray]:
    try:
        outs = model.infer(*arrays)
    except ModelError as exc:
        raise UpdateRejected(f"{what}: inference failed: {exc.reason}", code="golden") from None
    except Exception as exc:  # malformed input shapes surface as the runtime's own errors
        raise UpdateRejected(f"{what}: inference failed: {exc}", code="golden") from None
    for k, out in enumerate(outs):
        if not np.isfinite(out).all():
            raise UpdateRejected(f"emits NaN or inf (output {k} on {what})", code="nan")
    return outs
