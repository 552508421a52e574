"""Model runtime: LiteRT and ONNX Runtime backends behind one Model/FastPath seam, the model
store, loading with integrity checks and accelerator selection, and verification."""

from __future__ import annotations

from agent.runtime.base import Backend, FastPath, FloatArray, Model, TensorSpec
from agent.runtime.loader import check_file, load_model, load_model_file, pick_format
from agent.runtime.manifest import Manifest, ModelFile, load_manifest
from agent.runtime.slot import ModelSlot
from agent.runtime.store import ModelStore
from agent.runtime.verify import VerifyRow, verify_folder, verify_path

__all__ = [
    "Backend",
    "FastPath",
    "FloatArray",
    "Manifest",
    "Model",
    "ModelFile",
    "ModelSlot",
    "ModelStore",
    "TensorSpec",
    "VerifyRow",
    "check_file",
    "load_manifest",
    "load_model",
    "load_model_file",
    "pick_format",
    "verify_folder",
    "verify_path",
]
