"""`auto`: the Edge TPU, then the NPU, then the CPU; what is missing is logged, never warned."""

from __future__ import annotations

import logging

from agent.config.runtime import AutoRuntime
from agent.runtime.accelerators.base import Accelerator, Format, Placement
from agent.runtime.accelerators.coral import edgetpu_placement
from agent.runtime.accelerators.npu import npu_placement, wants_onnx
from agent.runtime.accelerators.providers import onnx_providers
from agent.runtime.manifest import Manifest

_log = logging.getLogger(__name__)


class Auto(Accelerator[AutoRuntime]):
    """Asks for nothing in particular, so it always places (on the CPU at worst)."""

    key = "auto"
    settings = AutoRuntime

    def place(
        self, manifest: Manifest, runtime: AutoRuntime, fmt: Format, cpu: Placement
    ) -> Placement:
        """The first of coral, npu that takes the model, else `cpu`."""
        # No variant means no Edge TPU for this model: not worth probing the library.
        coral = edgetpu_placement(
            manifest, runtime.edgetpu_library, fmt, probe_without_variant=False
        )
        if isinstance(coral, Placement):
            _log.info("%s: auto chose %s", manifest.name, coral.label)
            return coral
        npu = npu_placement(manifest, runtime, fmt, cpu)
        if isinstance(npu, Placement):
            _log.info("%s: auto chose %s", manifest.name, npu.label)
            return npu
        reasons = [f"coral: {r}" for r in coral] + [f"npu: {r}" for r in npu]
        _log.info("%s: auto chose cpu (%s)", manifest.name, "; ".join(reasons))
        return cpu

    def preferred_format(self, manifest: Manifest, runtime: AutoRuntime) -> Format | None:
        """.onnx when only ONNX providers are configured and one of them is present."""
        if wants_onnx(manifest, runtime) and onnx_providers(runtime.onnx_providers)[0]:
            return "onnx"
        return None


ACCELERATOR = Auto()
