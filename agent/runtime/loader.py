"""Load a model folder as the agent runs it: manifest, file choice, integrity, backend, specs."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

from agent.config.sections import RuntimeConfig
from agent.errors import AcceleratorUnavailable, ModelError
from agent.runtime.accelerators import (
    Format,
    Placement,
    cpu_file,
    load_delegate,
    place,
    preferred_format,
    unavailable,
)
from agent.runtime.base import Model
from agent.runtime.folders import check_file, model_file_path
from agent.runtime.manifest import Manifest, ModelFile, load_manifest

_log = logging.getLogger(__name__)


def load_model(
    folder: Path,
    runtime: RuntimeConfig,
    *,
    fmt: Literal["tflite", "onnx"] | None = None,
    verify_hash: bool = True,
    io: Literal["float32", "int8"] | None = None,
) -> Model:
    """Load the model in `folder` on the accelerator `runtime` asks for (see accelerators.py).

    `fmt` None picks .onnx when the config names ONNX providers for the NPU and no TFLite
    delegate, else .tflite when LiteRT imports, else .onnx. `io` picks a CPU file by its I/O
    type; None prefers float32 I/O. Raises ModelError (AcceleratorUnavailable under strict).
    """
    manifest = load_manifest(folder)
    chosen = fmt or pick_format(manifest, runtime)
    placement = place(manifest, runtime, chosen, io=io)
    if verify_hash:
        check_file(folder, placement.entry)
    if placement.kind == "cpu":
        return _open(folder, manifest, placement, runtime.threads)
    try:
        model = _open(folder, manifest, placement, runtime.threads)
    except AcceleratorUnavailable:
        raise
    except ModelError as exc:
        reason = f"{placement.label} could not run {placement.entry.path}: {exc.reason}"
    else:
        if model.accelerator != "cpu":
            return model
        reason = f"{placement.label} failed to initialise, ONNX Runtime chose {model.accelerator}"
        model.close()
    _fall_back(manifest.name, runtime, reason)
    cpu = Placement("cpu", cpu_file(manifest, chosen, io), "cpu")
    if verify_hash:
        check_file(folder, cpu.entry)
    return _open(folder, manifest, cpu, runtime.threads)


def load_model_file(
    folder: Path,
    manifest: Manifest,
    entry: ModelFile,
    *,
    threads: int = 1,
    verify_hash: bool = True,
    edgetpu_library: str = "libedgetpu.so.1",
) -> Model:
    """Load exactly this file of the manifest: on CPU, or with the Edge TPU for `edgetpu` files."""
    if verify_hash:
        check_file(folder, entry)
    placement = Placement("cpu", entry, "cpu")
    if entry.accelerator == "edgetpu":
        placement = Placement("coral", entry, "coral", delegates=(load_delegate(edgetpu_library),))
    return _open(folder, manifest, placement, threads)


def pick_format(manifest: Manifest, runtime: RuntimeConfig) -> Format:
    """The file format to load when the caller did not say (see `load_model`)."""
    from agent.runtime.tflite import litert_available

    formats = {f.format for f in manifest.files}
    wanted = preferred_format(manifest, runtime)
    if wanted is not None:
        return wanted
    if "tflite" in formats and litert_available():
        return "tflite"
    if "onnx" in formats:
        return "onnx"
    raise ModelError(f"{manifest.name} has only .tflite files and no LiteRT interpreter imports")


def _fall_back(model: str, runtime: RuntimeConfig, reason: str) -> None:
    if runtime.accelerator == "auto":
        _log.info("%s: %s; auto falls back to cpu", model, reason)
    else:
        unavailable(model, runtime, runtime.accelerator, [reason])


def _open(folder: Path, manifest: Manifest, placement: Placement, threads: int) -> Model:
    path = model_file_path(folder, placement.entry)
    model: Model
    if placement.entry.format == "tflite":
        from agent.runtime.tflite import TfliteModel

        model = TfliteModel(
            path,
            name=manifest.name,
            version=manifest.version,
            threads=threads,
            delegates=placement.delegates,
            accelerator=placement.label,
        )
    else:
        from agent.runtime.onnx import OnnxModel

        hints = ([t.shape for t in manifest.inputs], [t.shape for t in manifest.outputs])
        model = OnnxModel(
            path,
            name=manifest.name,
            version=manifest.version,
            threads=threads,
            providers=placement.providers,
            shape_hints=hints,
        )
    try:
        check_specs(model, manifest, placement.entry)
    except ModelError:
        model.close()
        raise
    return model


def check_specs(model: Model, manifest: Manifest, entry: ModelFile) -> None:
    """Raise ModelError unless the file's tensors match the manifest's inputs and outputs."""
    want_dtypes = ("float32",) if entry.io == "float32" else ("int8", "uint8")
    for role, got, want in (
        ("inputs", model.inputs, manifest.inputs),
        ("outputs", model.outputs, manifest.outputs),
    ):
        if len(got) != len(want):
            raise ModelError(
                f"file has {len(got)} {role}, manifest lists {len(want)}", path=model.path
            )
        for i, (spec, info) in enumerate(zip(got, want, strict=True)):
            if list(spec.shape) != list(info.shape):
                raise ModelError(
                    f"{role[:-1]} {i} ({spec.name}) has shape {list(spec.shape)}, "
                    f"manifest says {info.shape}",
                    path=model.path,
                )
            if spec.dtype not in want_dtypes:
                raise ModelError(
                    f"{role[:-1]} {i} ({spec.name}) is {spec.dtype}, manifest says io={entry.io}",
                    path=model.path,
                )
