"""`cpu`: LiteRT's default XNNPACK kernels, or ONNX Runtime's CPU provider."""

from __future__ import annotations

from agent.config.runtime import RuntimeConfig
from agent.runtime.accelerators.base import Accelerator, Format, Placement
from agent.runtime.manifest import Manifest


class Cpu(Accelerator[RuntimeConfig]):
    """Always available: the CPU file as chosen by the caller."""

    key = "cpu"
    settings = RuntimeConfig  # the bare shared settings mean cpu too

    def place(
        self, manifest: Manifest, runtime: RuntimeConfig, fmt: Format, cpu: Placement
    ) -> Placement:
        """The CPU placement itself."""
        return cpu


ACCELERATOR = Cpu()
