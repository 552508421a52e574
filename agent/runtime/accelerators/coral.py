"""`coral`: the Coral Edge TPU through the libedgetpu delegate, on a model's edgetpu variant."""

from __future__ import annotations

from agent.config.runtime import CoralRuntime
from agent.errors import AcceleratorUnavailable
from agent.runtime.accelerators.base import Accelerator, Format, Placement
from agent.runtime.accelerators.delegate import load_delegate
from agent.runtime.manifest import MANIFEST_FILE, Manifest


def edgetpu_placement(
    manifest: Manifest, library: str, fmt: Format, *, probe_without_variant: bool
) -> Placement | list[str]:
    """The `_edgetpu.tflite` file with the Edge TPU delegate, or every reason it cannot be."""
    if fmt != "tflite":
        return ["the Edge TPU runs .tflite files only, this load uses onnx"]
    reasons = []
    entry = manifest.file_for("tflite", "edgetpu")
    if entry is None:
        reasons.append(
            f"no edgetpu variant (a *_edgetpu.tflite file) in {manifest.name}/{MANIFEST_FILE}"
        )
        if not probe_without_variant:
            return reasons
    try:
        delegate = load_delegate(library)
    except AcceleratorUnavailable as exc:
        reasons.append(exc.reason)
    if entry is None or reasons:
        return reasons
    return Placement("coral", entry, "coral", delegates=(delegate,))


class Coral(Accelerator[CoralRuntime]):
    """Asked for explicitly: both a missing variant and a missing library are reported."""

    key = "coral"
    settings = CoralRuntime

    def place(
        self, manifest: Manifest, runtime: CoralRuntime, fmt: Format, cpu: Placement
    ) -> Placement | list[str]:
        """The edgetpu variant on the Edge TPU, or why not."""
        return edgetpu_placement(manifest, runtime.edgetpu_library, fmt, probe_without_variant=True)


ACCELERATOR = Coral()
