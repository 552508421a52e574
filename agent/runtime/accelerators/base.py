"""The accelerator seam: where a model file runs, and what to say when it cannot run there."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, Generic, Literal, TypeVar

from agent.config.runtime import RuntimeConfig
from agent.errors import AcceleratorUnavailable, ModelError
from agent.runtime.manifest import Manifest, ModelFile
from agent.runtime.onnx import CPU_PROVIDER

_log = logging.getLogger(__name__)

Format = Literal["tflite", "onnx"]
SettingsT = TypeVar("SettingsT", bound=RuntimeConfig)


@dataclass(frozen=True)
class Placement:
    """One model file and what runs it: delegates (LiteRT) or execution providers (ORT)."""

    kind: Literal["cpu", "coral", "npu"]
    entry: ModelFile
    label: str
    delegates: tuple[object, ...] = ()
    providers: tuple[str, ...] = (CPU_PROVIDER,)


class Accelerator(ABC, Generic[SettingsT]):
    """One value of `runtime.accelerator`: places a model on its hardware, or says why not."""

    key: ClassVar[str]
    """The `runtime.accelerator` value this accelerator answers to."""
    settings: ClassVar[type[RuntimeConfig]]
    """The config class holding its settings (agent.config.runtime)."""

    @abstractmethod
    def place(
        self, manifest: Manifest, runtime: SettingsT, fmt: Format, cpu: Placement
    ) -> Placement | list[str]:
        """A placement of `manifest` in `fmt`, or the reasons this accelerator cannot take it."""

    def preferred_format(self, manifest: Manifest, runtime: SettingsT) -> Format | None:
        """The file format this accelerator wants when the caller named none (None: no wish)."""
        return None


def cpu_file(manifest: Manifest, fmt: Format, io: str | None = None) -> ModelFile:
    """The CPU file of `fmt`; float32 I/O preferred (quantize ops inside the graph are cheaper)."""
    files = [f for f in manifest.files if f.format == fmt and f.accelerator == "cpu"]
    if io is not None:
        files = [f for f in files if f.io == io]
    if not files:
        what = f"{fmt} file" + (f" with {io} I/O" if io else "")
        raise ModelError(f"manifest of {manifest.name} lists no CPU {what}")
    return sorted(files, key=lambda f: f.io != "float32")[0]


def unavailable(model: str, runtime: RuntimeConfig, wanted: str, reasons: list[str]) -> None:
    """Under strict raise AcceleratorUnavailable naming what is missing, else warn once."""
    what = "; ".join(reasons)
    if runtime.strict:
        raise AcceleratorUnavailable(f"{wanted} unavailable ({what}) and runtime.strict is set")
    _log.warning("%s: %s unavailable (%s); running on CPU", model, wanted, what)
