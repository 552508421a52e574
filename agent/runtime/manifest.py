"""The model manifest (models/<name>/manifest.json): files, specs, golden vectors, quality."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agent.errors import ModelError

MANIFEST_FILE = "manifest.json"
SCHEMA_VERSION: Literal[1] = 1


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TensorInfo(_Strict):
    """A tensor as callers see it (float32 unless the model exposes raw int8)."""

    name: str
    shape: list[int]
    dtype: Literal["float32", "int8", "uint8"] = "float32"


class ModelFile(_Strict):
    """One file of the model: a format and accelerator variant of the same network."""

    format: Literal["tflite", "onnx"]
    path: str = Field(description="Relative to the manifest's folder")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=1)
    accelerator: Literal["cpu", "edgetpu", "npu"] = "cpu"
    io: Literal["float32", "int8"] = Field(
        "float32", description="float32: quantize ops inside the graph; int8: raw int8 tensors"
    )


class GoldenVector(_Strict):
    """An input and the output every file of the model must reproduce within `tolerance`."""

    inputs: list[Any] = Field(description="One nested list per model input (float values)")
    outputs: list[Any] = Field(description="One nested list per model output (float reference)")
    tolerance: float = Field(gt=0, description="Largest absolute difference allowed")
    tolerances: list[float] | None = Field(
        None, description="One tolerance per output (overrides `tolerance` where given)"
    )


class Manifest(_Strict):
    """Everything the agent needs to know about a model folder."""

    schema_version: Literal[1] = SCHEMA_VERSION
    name: str = Field(pattern=r"^[a-z0-9_]+$")
    version: str = Field(pattern=r"^\d+\.\d+\.\d+$")
    task: str
    description: str = ""
    files: list[ModelFile] = Field(min_length=1)
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    preprocessing: dict[str, Any] = Field(default_factory=dict)
    golden: list[GoldenVector] = Field(default_factory=list)
    quality: dict[str, Any] = Field(default_factory=dict)
    training: dict[str, Any] = Field(default_factory=dict, description="Script, seed, data sizes")
    allow_downgrade: bool = Field(
        False, description="OTA: accept this version below the active one"
    )

    @property
    def version_tuple(self) -> tuple[int, int, int]:
        """The version as a comparable tuple."""
        major, minor, patch = (int(x) for x in self.version.split("."))
        return (major, minor, patch)

    def file_for(self, fmt: str, accelerator: str = "cpu") -> ModelFile | None:
        """The file of this format and accelerator variant, if the model has one."""
        for f in self.files:
            if f.format == fmt and f.accelerator == accelerator:
                return f
        return None


def load_manifest(folder: Path) -> Manifest:
    """Read and validate `folder/manifest.json`, raising ModelError naming what is wrong."""
    path = folder / MANIFEST_FILE
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelError("no manifest.json", path=str(folder)) from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"unreadable manifest: {exc}", path=str(path)) from None
    try:
        return Manifest.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise ModelError(f"invalid manifest at {loc}: {first['msg']}", path=str(path)) from None
