"""Where a model runs: resolve RuntimeConfig.accelerator to a file, delegates or providers.

`cpu` is LiteRT's default XNNPACK or ORT's CPU provider. `coral` needs the Edge TPU delegate
library and the manifest's `edgetpu` variant. `npu` needs the configured TFLite external delegate
(for .tflite) or one of the configured ONNX Runtime providers (for .onnx). `auto` tries coral, then
npu, then cpu, quietly. An explicit request that cannot be met falls back to CPU with one warning
naming what was missing, or raises AcceleratorUnavailable under `strict`.
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from agent.config.sections import RuntimeConfig
from agent.errors import AcceleratorUnavailable, ModelError
from agent.runtime.manifest import MANIFEST_FILE, Manifest, ModelFile

_log = logging.getLogger(__name__)

CPU_PROVIDER = "CPUExecutionProvider"
Format = Literal["tflite", "onnx"]
_DELEGATE_SYMBOLS = ("tflite_plugin_create_delegate", "tflite_plugin_destroy_delegate")


@dataclass(frozen=True)
class Placement:
    """One model file and what runs it: delegates (LiteRT) or execution providers (ORT)."""

    kind: Literal["cpu", "coral", "npu"]
    entry: ModelFile
    label: str
    delegates: tuple[object, ...] = ()
    providers: tuple[str, ...] = (CPU_PROVIDER,)


def load_delegate(library: str, options: Mapping[str, str] | None = None) -> object:
    """Load a TFLite external delegate, raising AcceleratorUnavailable naming the library."""
    # Checked with plain ctypes first: LiteRT's own loader leaves a half-built Delegate whose
    # __del__ raises when the library is missing or is not a delegate.
    try:
        lib = ctypes.CDLL(library)
    except OSError as exc:
        raise AcceleratorUnavailable(f"delegate library not loadable: {exc}") from None
    for symbol in _DELEGATE_SYMBOLS:
        if not hasattr(lib, symbol):
            raise AcceleratorUnavailable(f"{library} is no TFLite external delegate (no {symbol})")
    from agent.runtime.tflite import interpreter_module

    try:
        return interpreter_module().load_delegate(library, dict(options or {}))
    except (ValueError, OSError, RuntimeError) as exc:
        reason = str(exc).strip().replace("\n", " ")
        raise AcceleratorUnavailable(f"{library} failed to create a delegate: {reason}") from None


def onnx_providers(wanted: list[str]) -> tuple[list[str], list[str]]:
    """Split `wanted` ORT execution providers into (available in this build, missing)."""
    import onnxruntime as ort

    available = set(ort.get_available_providers())
    return [p for p in wanted if p in available], [p for p in wanted if p not in available]


def cpu_file(manifest: Manifest, fmt: Format, io: str | None = None) -> ModelFile:
    """The CPU file of `fmt`; float32 I/O preferred (quantize ops inside the graph are cheaper)."""
    files = [f for f in manifest.files if f.format == fmt and f.accelerator == "cpu"]
    if io is not None:
        files = [f for f in files if f.io == io]
    if not files:
        what = f"{fmt} file" + (f" with {io} I/O" if io else "")
        raise ModelError(f"manifest of {manifest.name} lists no CPU {what}")
    return sorted(files, key=lambda f: f.io != "float32")[0]


def place(
    manifest: Manifest, runtime: RuntimeConfig, fmt: Format, *, io: str | None = None
) -> Placement:
    """Choose file and accelerator for `manifest` under `runtime`, warning or raising per strict."""
    cpu = Placement("cpu", cpu_file(manifest, fmt, io), "cpu")
    wanted = runtime.accelerator
    if wanted == "cpu":
        return cpu
    order = ("coral", "npu") if wanted == "auto" else (wanted,)
    reasons: list[str] = []
    for kind in order:
        found = (
            _try_coral(manifest, runtime, fmt, wanted)
            if kind == "coral"
            else _try_npu(manifest, runtime, fmt, cpu.entry)
        )
        if isinstance(found, Placement):
            if wanted == "auto":
                _log.info("%s: auto chose %s", manifest.name, found.label)
            return found
        reasons += [f"{kind}: {r}" if len(order) > 1 else r for r in found]
    if wanted == "auto":
        _log.info("%s: auto chose cpu (%s)", manifest.name, "; ".join(reasons))
        return cpu
    unavailable(manifest.name, runtime, wanted, reasons)
    return cpu


def unavailable(model: str, runtime: RuntimeConfig, wanted: str, reasons: list[str]) -> None:
    """Under strict raise AcceleratorUnavailable naming what is missing, else warn once."""
    what = "; ".join(reasons)
    if runtime.strict:
        raise AcceleratorUnavailable(f"{wanted} unavailable ({what}) and runtime.strict is set")
    _log.warning("%s: %s unavailable (%s); running on CPU", model, wanted, what)


def _try_coral(
    manifest: Manifest, runtime: RuntimeConfig, fmt: Format, wanted: str
) -> Placement | list[str]:
    if fmt != "tflite":
        return ["the Edge TPU runs .tflite files only, this load uses onnx"]
    reasons = []
    entry = manifest.file_for("tflite", "edgetpu")
    if entry is None:
        reasons.append(
            f"no edgetpu variant (a *_edgetpu.tflite file) in {manifest.name}/{MANIFEST_FILE}"
        )
        if wanted == "auto":
            return reasons  # no point probing the library for a model without the variant
    try:
        delegate = load_delegate(runtime.edgetpu_library)
    except AcceleratorUnavailable as exc:
        reasons.append(exc.reason)
    if entry is None or reasons:
        return reasons
    return Placement("coral", entry, "coral", delegates=(delegate,))


def _try_npu(
    manifest: Manifest, runtime: RuntimeConfig, fmt: Format, cpu_entry: ModelFile
) -> Placement | list[str]:
    entry = manifest.file_for(fmt, "npu") or cpu_entry
    if fmt == "onnx":
        if not runtime.onnx_providers:
            return ["no runtime.onnx_providers configured"]
        present, missing = onnx_providers(runtime.onnx_providers)
        if not present:
            return [f"ONNX Runtime execution provider not available: {', '.join(missing)}"]
        if missing:
            _log.info("%s: providers not in this ORT build: %s", manifest.name, ", ".join(missing))
        return Placement("npu", entry, f"npu:{present[0]}", providers=(*present, CPU_PROVIDER))
    if not runtime.npu_delegate:
        return ["no runtime.npu_delegate library configured"]
    try:
        delegate = load_delegate(runtime.npu_delegate, runtime.npu_delegate_options)
    except AcceleratorUnavailable as exc:
        return [exc.reason]
    label = f"npu:{Path(runtime.npu_delegate).name}"
    return Placement("npu", entry, label, delegates=(delegate,))
