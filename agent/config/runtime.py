"""The `[runtime]` section: one settings class per accelerator, chosen by `accelerator`.

Each class holds only the keys its accelerator reads, so a key of another accelerator (an
`npu_delegate` under `accelerator = "coral"`) is an error naming the accelerator, not a silent
no-op. The classes live here, below agent.runtime, because the whole config is validated before
any runtime is imported; agent.runtime.accelerators binds one module to each key.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, Tag, model_validator

from agent.config.base import Section, by_key, tag


class RuntimeConfig(Section):
    """Where and how models run: what every accelerator shares (alone, it means `cpu`)."""

    accelerator: str = Field(
        default="cpu", description="cpu, coral, npu, or auto (tries coral, then npu, then cpu)"
    )
    strict: bool = Field(default=False, description="Fail instead of falling back to CPU")
    threads: int = Field(default=1, ge=1, le=64, description="Intra-op threads per model")

    @model_validator(mode="after")
    def _bare_means_cpu(self) -> RuntimeConfig:
        # Another accelerator without its own class would lack its settings (delegate, ...).
        if type(self) is RuntimeConfig and self.accelerator != "cpu":
            raise ValueError(f"accelerator {self.accelerator!r} needs its own settings class")
        return self


class CpuRuntime(RuntimeConfig):
    """LiteRT's default XNNPACK or ONNX Runtime's CPU provider."""

    accelerator: Literal["cpu"] = Field(default="cpu", description="Run on the CPU")


class EdgeTpuSettings(Section):
    """Settings of the Coral Edge TPU (coral, auto)."""

    edgetpu_library: str = Field(
        default="libedgetpu.so.1", description="Coral Edge TPU delegate library"
    )


class NpuSettings(Section):
    """Settings of an NPU: a TFLite external delegate or ONNX Runtime providers (npu, auto)."""

    npu_delegate: str | None = Field(
        default=None,
        description="TFLite external delegate library for the NPU, e.g. libvx_delegate.so",
    )
    npu_delegate_options: dict[str, str] = Field(
        default_factory=dict, description="Options passed to the external delegate"
    )
    onnx_providers: list[str] = Field(
        default_factory=list,
        description="ONNX Runtime execution providers tried in order for npu, before CPU",
    )


class CoralRuntime(EdgeTpuSettings, RuntimeConfig):
    """The Coral Edge TPU through libedgetpu, on each model's `_edgetpu.tflite` variant."""

    accelerator: Literal["coral"] = Field(default="coral", description="Run on the Edge TPU")


class NpuRuntime(NpuSettings, RuntimeConfig):
    """An NPU or GPU: a TFLite external delegate, or ONNX Runtime execution providers."""

    accelerator: Literal["npu"] = Field(default="npu", description="Run on the NPU")


class AutoRuntime(EdgeTpuSettings, NpuSettings, RuntimeConfig):
    """Whatever this board has: coral, then npu, then cpu, without warnings."""

    accelerator: Literal["auto"] = Field(default="auto", description="Pick the first available")


ACCELERATORS: dict[str, type[RuntimeConfig]] = {
    "cpu": CpuRuntime,
    "coral": CoralRuntime,
    "npu": NpuRuntime,
    "auto": AutoRuntime,
}
"""The settings class of each `runtime.accelerator` value."""

RuntimeSection = Annotated[
    Annotated[CpuRuntime, Tag(tag("accelerator", "cpu"))]
    | Annotated[CoralRuntime, Tag(tag("accelerator", "coral"))]
    | Annotated[NpuRuntime, Tag(tag("accelerator", "npu"))]
    | Annotated[AutoRuntime, Tag(tag("accelerator", "auto"))],
    by_key("accelerator", "cpu", tuple(ACCELERATORS)),
]
"""The `[runtime]` table: the settings class its `accelerator` names (cpu when absent)."""
