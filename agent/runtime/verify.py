"""Check model folders end to end: size and sha256, load every file, reproduce golden vectors."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np

from agent.errors import AcceleratorUnavailable, ModelError
from agent.runtime.base import FloatArray, Model
from agent.runtime.folders import check_file
from agent.runtime.loader import load_model_file
from agent.runtime.manifest import MANIFEST_FILE, GoldenVector, Manifest, ModelFile, load_manifest
from agent.runtime.tflite import litert_available

Result = Literal["ok", "FAIL", "skipped"]


@dataclass(frozen=True)
class VerifyRow:
    """The outcome for one file of one model (or for a manifest that does not load)."""

    name: str
    version: str
    file: str
    format: str
    io: str
    size: int
    result: Result
    max_error: float | None = None
    reason: str = ""
    outputs: tuple[OutputCheck, ...] = ()
    """Per output: its largest error, the tolerance it was held to and where that is set."""


def model_folders(path: Path) -> list[Path]:
    """`path` itself when it holds a manifest, else its sub-folders that do, sorted."""
    if (path / MANIFEST_FILE).is_file():
        return [path]
    return sorted(p.parent for p in path.glob(f"*/{MANIFEST_FILE}"))


def verify_path(path: Path, *, edgetpu_library: str = "libedgetpu.so.1") -> list[VerifyRow]:
    """Verify a models directory or one model folder; one row per file."""
    rows: list[VerifyRow] = []
    for folder in model_folders(path):
        rows += verify_folder(folder, edgetpu_library=edgetpu_library)
    return rows


def verify_folder(folder: Path, *, edgetpu_library: str = "libedgetpu.so.1") -> list[VerifyRow]:
    """Verify every file listed in `folder/manifest.json`."""
    try:
        manifest = load_manifest(folder)
    except ModelError as exc:
        return [
            VerifyRow(
                folder.name,
                "-",
                str(folder / MANIFEST_FILE),
                "-",
                "-",
                0,
                "FAIL",
                reason=exc.reason,
            )
        ]
    return [_verify_file(folder, manifest, entry, edgetpu_library) for entry in manifest.files]


def _verify_file(folder: Path, manifest: Manifest, entry: ModelFile, lib: str) -> VerifyRow:
    def row(
        result: Result,
        max_error: float | None = None,
        reason: str = "",
        outputs: tuple[OutputCheck, ...] = (),
    ) -> VerifyRow:
        return VerifyRow(
            manifest.name,
            manifest.version,
            str(folder / entry.path),
            entry.format,
            entry.io,
            entry.size,
            result,
            max_error,
            reason,
            outputs,
        )

    try:
        check_file(folder, entry)
        if entry.format == "tflite" and not litert_available():
            return row("skipped", reason="sha256 ok, not run: no LiteRT interpreter here")
        model = load_model_file(folder, manifest, entry, edgetpu_library=lib)
    except AcceleratorUnavailable as exc:
        return row("skipped", reason=f"sha256 ok, not run: {exc.reason}")
    except ModelError as exc:
        return row("FAIL", reason=exc.reason)
    with model:
        try:
            golden = check_golden(model, manifest.golden)
        except ModelError as exc:
            return row("FAIL", reason=exc.reason)
    if golden.failure:
        return row("FAIL", golden.max_error, golden.failure, golden.outputs)
    note = "" if manifest.golden else "no golden vectors"
    return row("ok", golden.max_error, note, golden.outputs)


@dataclass(frozen=True, slots=True)
class OutputCheck:
    """One output over every golden vector: its worst error against the tolerance it met."""

    index: int
    max_error: float
    """The error of the vector that came closest to its tolerance (the largest error/tolerance)."""
    tolerance: float
    source: str
    """Where the tolerance is set in manifest.json, e.g. `golden[3].tolerance`."""
    largest_output: float
    """The largest |expected value| of this output over the vectors: the scale of the error."""


@dataclass(frozen=True, slots=True)
class GoldenCheck:
    """How a model reproduced its golden vectors, through `infer` and through its fast path."""

    max_error: float | None
    """Largest absolute error over every vector and output; None when there are no vectors."""
    failure: str = ""
    """The first vector and output off by more than its tolerance ("" when all pass)."""
    non_finite: bool = False
    """The first failure is a NaN or inf output."""
    outputs: tuple[OutputCheck, ...] = ()


def check_golden(model: Model, golden: Sequence[GoldenVector]) -> GoldenCheck:
    """Run every vector through `infer` and the fast path; ModelError if one does not fit."""
    if not golden:
        return GoldenCheck(None)
    fast = model.fast_path()
    worst = 0.0
    failure = ""
    non_finite = False
    per_output: dict[int, OutputCheck] = {}
    for k, vector in enumerate(golden):
        if len(vector.outputs) != len(model.outputs):
            raise ModelError(
                f"golden vector {k} lists {len(vector.outputs)} outputs, the model has "
                f"{len(model.outputs)}",
                path=model.path,
            )
        outs = model.infer(*vector.inputs)
        for buf, values in zip(fast.inputs, vector.inputs, strict=True):
            buf[...] = np.asarray(values, np.float32).reshape(buf.shape)
        fast.run()
        for j, expected in enumerate(vector.outputs):
            err = _max_error(expected, outs[j], fast.outputs[j], path=model.path)
            worst = max(worst, err) if err == err else err  # keep a NaN visible
            check = _output_check(k, j, vector, expected, err)
            per_output[j] = _nearer(check, per_output.get(j))
            limit = check.tolerance
            if err <= limit or failure:
                continue
            non_finite = not np.isfinite(err)  # NaN fails too: `err <= limit` is False
            what = "emits NaN or inf" if non_finite else f"max error {err:.4g}"
            failure = f"fails golden vector {k} output {j}: {what} > tolerance {limit:.4g}"
    return GoldenCheck(worst, failure, non_finite, tuple(per_output[j] for j in sorted(per_output)))


def _output_check(
    k: int, j: int, vector: GoldenVector, expected: object, err: float
) -> OutputCheck:
    own = vector.tolerances or ()
    if j < len(own):
        limit, source = own[j], f"golden[{k}].tolerances[{j}]"
    else:
        limit, source = vector.tolerance, f"golden[{k}].tolerance"
    scale = float(np.abs(np.asarray(expected, np.float32)).max(initial=0.0))
    return OutputCheck(j, err, limit, source, scale)


def _nearer(check: OutputCheck, seen: OutputCheck | None) -> OutputCheck:
    """Of two checks of one output, the one nearer its tolerance (a NaN error is nearest), with
    the larger output scale of the two."""
    if seen is None:
        return check
    new, old = check.max_error / check.tolerance, seen.max_error / seen.tolerance
    nearer = check if (new != new and old == old) or new > old else seen  # x != x: NaN
    return replace(nearer, largest_output=max(check.largest_output, seen.largest_output))


def _max_error(expected: object, *got: FloatArray, path: str) -> float:
    want = np.asarray(expected, np.float32)
    if want.size != got[0].size:
        raise ModelError(
            f"golden output has {want.size} values, model gives {got[0].size}", path=path
        )
    want = want.reshape(got[0].shape)
    return max(float(np.abs(g - want).max()) for g in got)
