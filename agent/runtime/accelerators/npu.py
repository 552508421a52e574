"""`npu`: a TFLite external delegate for .tflite files, ONNX Runtime providers for .onnx."""

from __future__ import annotations

from pathlib import Path

from agent.config.runtime import NpuRuntime, NpuSettings
from agent.errors import AcceleratorUnavailable
from agent.runtime.accelerators.base import Accelerator, Format, Placement
from agent.runtime.accelerators.delegate import load_delegate
from agent.runtime.accelerators.providers import provider_placement
from agent.runtime.manifest import Manifest


def npu_placement(
    manifest: Manifest, settings: NpuSettings, fmt: Format, cpu: Placement
) -> Placement | list[str]:
    """The npu variant (else the CPU file) on the delegate or providers, or why not."""
    entry = manifest.file_for(fmt, "npu") or cpu.entry
    if fmt == "onnx":
        return provider_placement(manifest.name, settings.onnx_providers, entry)
    if not settings.npu_delegate:
        return ["no runtime.npu_delegate library configured"]
    try:
        delegate = load_delegate(settings.npu_delegate, settings.npu_delegate_options)
    except AcceleratorUnavailable as exc:
        return [exc.reason]
    label = f"npu:{Path(settings.npu_delegate).name}"
    return Placement("npu", entry, label, delegates=(delegate,))


def wants_onnx(manifest: Manifest, settings: NpuSettings) -> bool:
    """True when only ONNX providers are configured and the manifest has an .onnx file."""
    formats = {f.format for f in manifest.files}
    return bool(settings.onnx_providers) and not settings.npu_delegate and "onnx" in formats


class Npu(Accelerator[NpuRuntime]):
    """Asked for explicitly: a missing delegate or provider is reported."""

    key = "npu"
    settings = NpuRuntime

    def place(
        self, manifest: Manifest, runtime: NpuRuntime, fmt: Format, cpu: Placement
    ) -> Placement | list[str]:
        """The model on the NPU, or why not."""
        return npu_placement(manifest, runtime, fmt, cpu)

    def preferred_format(self, manifest: Manifest, runtime: NpuRuntime) -> Format | None:
        """.onnx when the NPU is reached only through ONNX Runtime providers."""
        return "onnx" if wants_onnx(manifest, runtime) else None


ACCELERATOR = Npu()
