"""`import_model`: check a user's model, quantize it when needed, measure it, write its folder.

Every problem is collected before anything is written, and raised together as ImportProblems.
The folder is built in a staging directory beside the destination, checked with `models verify`'s
own code, and renamed into place, so a failed import leaves nothing behind.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from agent.config.sections import RuntimeConfig
from agent.errors import ModelError
from agent.modelimport.accel import accelerator_findings
from agent.modelimport.calibration import Calibration, load_calibration, seeded_calibration
from agent.modelimport.errors import ImportProblems
from agent.modelimport.inspection import ModelInfo, inspect_model
from agent.modelimport.quality import (
    Outputs,
    Quality,
    latency,
    measure,
    open_model,
    paced_runs_for,
    run_all,
)
from agent.modelimport.writer import (
    WrittenFile,
    file_entry,
    golden_vectors,
    quality_block,
    tensor_infos,
    write_manifest,
)
from agent.runtime.manifest import Manifest

Plan = Literal["quantize", "as_is", "float"]
FLOAT_REFERENCE = "eval/float.onnx"
_NAME = re.compile(r"^[a-z0-9_]+$")
_VERSION = re.compile(r"^\d+\.\d+\.\d+$")
FLOAT_TFLITE_HOWTO = (
    "float TFLite model: convert it to int8 with a representative dataset, e.g. "
    "converter.optimizations = [tf.lite.Optimize.DEFAULT]; converter.representative_dataset = "
    "calibration samples; converter.target_spec.supported_ops = "
    "[tf.lite.OpsSet.TFLITE_BUILTINS_INT8] (or export ONNX and import that with "
    "--calibration), or pass --float to run it as float"
)


@dataclass(frozen=True)
class ImportRequest:
    """What `edge-agent models import` was asked."""

    file: Path
    name: str
    out_dir: Path = Path("models")
    calibration: Path | None = None
    version: str = "1.0.0"
    keep_float: bool = False
    rate_hz: float = 100.0
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    force: bool = False


@dataclass
class ImportResult:
    """What was written and measured."""

    folder: Path
    manifest: Manifest
    info: ModelInfo
    plan: Plan
    quality: Quality
    warnings: list[str]
    quantization: dict[str, Any]


def import_model(req: ImportRequest) -> ImportResult:
    """Import `req.file` into `req.out_dir/req.name`; raise ImportProblems listing every problem."""
    problems = _check_request(req)
    try:
        info = inspect_model(req.file)
    except ModelError as exc:
        raise ImportProblems([*problems, f"model: {exc.reason}"], path=str(req.file)) from None
    problems += [f"model: {p}" for p in info.problems]
    plan = _plan(info, req, problems)
    calib = _calibration(req, info, plan, problems)
    warnings = accelerator_findings(info, req.runtime) if not info.problems else []
    if warnings and req.runtime.strict:
        problems += [f"{w} (runtime.strict is set)" for w in warnings]
    if problems or calib is None:
        raise ImportProblems(problems, path=str(req.file))
    dest = req.out_dir / req.name
    req.out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{req.name}.", dir=req.out_dir))
    try:
        result = _build(req, info, plan, calib, staging, warnings)
        if dest.exists():
            shutil.rmtree(dest)
        staging.rename(dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    result.folder = dest
    return result


def _check_request(req: ImportRequest) -> list[str]:
    problems = []
    if not _NAME.match(req.name):
        problems.append(f"--name {req.name!r}: use lower-case letters, digits and _ only")
    if not _VERSION.match(req.version):
        problems.append(f"--version {req.version!r}: use MAJOR.MINOR.PATCH, e.g. 1.0.0")
    if not req.rate_hz > 0:
        problems.append(f"--rate-hz {req.rate_hz}: must be above 0")
    dest = req.out_dir / req.name
    if dest.exists() and not req.force:
        problems.append(f"{dest} exists: choose another --name, or --force to replace it")
    return problems


def _plan(info: ModelInfo, req: ImportRequest, problems: list[str]) -> Plan:
    if info.quantized:
        return "as_is"
    if req.keep_float:
        return "float"
    if info.format == "tflite":
        problems.append(f"model: {FLOAT_TFLITE_HOWTO}")
        return "float"
    return "quantize"


def _calibration(
    req: ImportRequest, info: ModelInfo, plan: Plan, problems: list[str]
) -> Calibration | None:
    if req.calibration is None:
        if plan == "quantize":
            problems.append(
                "calibration: a float ONNX model is quantized with calibration samples: pass "
                "--calibration DATA.npz (or --float to import it as float)"
            )
        return None if info.problems else seeded_calibration(info.inputs)
    if info.problems:
        return None
    calib, found = load_calibration(req.calibration, info.inputs)
    problems += found
    return calib


def _build(
    req: ImportRequest,
    info: ModelInfo,
    plan: Plan,
    calib: Calibration,
    folder: Path,
    warnings: list[str],
) -> ImportResult:
    files, reference, quant = _write_files(info, plan, calib, folder)
    shapes = ([list(s.shape) for s in info.inputs], [list(s.shape) for s in info.outputs])
    main = files[0]
    with open_model(folder / main.path, main.format, req.name, shapes) as model:
        model_out = run_all(model, calib)
        _check_finite(model_out, info, calib)
        float_out = None
        if reference is not None:
            with open_model(folder / reference, "onnx", req.name, shapes) as ref:
                float_out = run_all(ref, calib)
        quality = measure(model_out, float_out, [s.name for s in info.outputs], calib)
    quality.latency = _latencies(req, folder, files, reference, calib, shapes, plan)
    kind = "float" if plan == "float" else "int8"
    sizes = {f"{kind}_{f.format}_bytes": (folder / f.path).stat().st_size for f in files}
    if reference is not None:
        sizes["float_onnx_bytes"] = (folder / reference).stat().st_size
    extra = {"calibration": "seeded" if calib.seeded else req.calibration.name}  # type: ignore[union-attr]
    extra |= {"rate_hz": req.rate_hz, "imported_from": req.file.name, "kind": plan}
    if quant:
        extra["quantization"] = quant
    raw = {
        "schema_version": 1,
        "name": req.name,
        "version": req.version,
        "task": quality.task,
        "description": f"Imported from {req.file.name} by edge-agent models import",
        "files": [file_entry(folder, f) for f in files],
        "inputs": tensor_infos(info.inputs),
        "outputs": tensor_infos(info.outputs),
        "preprocessing": {},
        "golden": golden_vectors(calib, model_out, quality),
        "quality": quality_block(quality, sizes, extra),
    }
    manifest = write_manifest(folder, raw)
    _self_check(folder)
    return ImportResult(folder, manifest, info, plan, quality, [*info.notes, *warnings], quant)


def _check_finite(outputs: Outputs, info: ModelInfo, calib: Calibration) -> None:
    problems = []
    for spec, values in zip(info.outputs, outputs, strict=True):
        bad = ~np.isfinite(values.reshape(values.shape[0], -1)).all(axis=1)
        if bad.any():
            what = "seeded inputs" if calib.seeded else "calibration samples"
            problems.append(
                f"model: output {spec.name!r} is NaN/inf on {int(bad.sum())} of {bad.size} "
                f"{what} (first: sample {int(np.flatnonzero(bad)[0])})"
            )
    if problems:
        raise ImportProblems(problems, path=str(info.source))


def _write_files(
    info: ModelInfo, plan: Plan, calib: Calibration, folder: Path
) -> tuple[list[WrittenFile], str | None, dict[str, Any]]:
    if info.format == "tflite":
        name = "model_int8io.tflite" if info.io == "int8" else "model.tflite"
        shutil.copyfile(info.source, folder / name)
        return [WrittenFile(name, "tflite", info.io)], None, {}
    model_bytes = info.onnx_model.SerializeToString()
    if plan != "quantize":
        (folder / "model.onnx").write_bytes(model_bytes)
        return [WrittenFile("model.onnx", "onnx", "float32")], None, {}
    from agent.modelimport.quantize import quantize_qdq

    quantized = quantize_qdq(info.onnx_model, calib, info.inputs)
    (folder / "eval").mkdir()
    (folder / FLOAT_REFERENCE).write_bytes(model_bytes)
    (folder / "model.onnx").write_bytes(quantized.model_bytes)
    how: dict[str, Any] = {
        "method": "onnxruntime static QDQ, MinMax calibration, int8 weights and activations",
        "weights": "per-channel" if quantized.per_channel else "per-tensor",
        "max_abs_error_tried": {k: float(f"{v:.6g}") for k, v in quantized.tried.items()},
    }
    for variant, reason in quantized.failed.items():
        how.setdefault("failed", {})[variant] = reason
        info.notes.append(f"quantizer failed {variant}, kept the other: {reason}")
    if quantized.left_float:
        how["left_float"] = quantized.left_float
        info.notes.append(
            f"quantizer left {len(quantized.left_float)} tensor(s) float (types unknown after "
            f"non-default-domain operators): {', '.join(quantized.left_float)}"
        )
    return [WrittenFile("model.onnx", "onnx", "float32")], FLOAT_REFERENCE, how


def _latencies(
    req: ImportRequest,
    folder: Path,
    files: list[WrittenFile],
    reference: str | None,
    calib: Calibration,
    shapes: tuple[list[Any], list[Any]],
    plan: Plan,
) -> list[Any]:
    runs = paced_runs_for(req.rate_hz)
    sample = calib.sample(0)
    kind = "float" if plan == "float" else "int8"
    targets = [
        (f.path, f.format, f"{f.format} {kind}" + (" (int8 I/O)" if f.io == "int8" else ""))
        for f in files
    ]
    if reference is not None:
        targets.append((reference, "onnx", "onnx float (eval)"))
    found = []
    for path, fmt, label in targets:
        with open_model(folder / path, fmt, req.name, shapes) as model:
            found.append(latency(model, sample, label, req.rate_hz, runs))
    return found


def _self_check(folder: Path) -> None:
    """Run `models verify` on the new folder: sha256, load, golden vectors on every file."""
    from agent.runtime.verify import verify_folder

    failed = [r for r in verify_folder(folder) if r.result == "FAIL"]
    if failed:
        raise ImportProblems([f"self-check: {r.file}: {r.reason}" for r in failed])
