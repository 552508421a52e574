"""Model runtime: LiteRT and ONNX Runtime backends behind one Model/FastPath seam, model folders
(folders.py), loading with integrity checks and accelerator selection, and verification.

Importing the package imports none of its modules: each name is handed on from its module on
first use, so a user of `agent.runtime.base` does not load the loader or a runtime.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agent.runtime.base import Backend, FastPath, FloatArray, Model, TensorSpec
    from agent.runtime.folders import ModelStore, check_file
    from agent.runtime.loader import load_model, load_model_file, pick_format
    from agent.runtime.manifest import Manifest, ModelFile, load_manifest
    from agent.runtime.slot import ModelSlot
    from agent.runtime.verify import VerifyRow, verify_folder, verify_path

_HOME = {
    "Backend": "base",
    "FastPath": "base",
    "FloatArray": "base",
    "Model": "base",
    "TensorSpec": "base",
    "ModelStore": "folders",
    "check_file": "folders",
    "load_model": "loader",
    "load_model_file": "loader",
    "pick_format": "loader",
    "Manifest": "manifest",
    "ModelFile": "manifest",
    "load_manifest": "manifest",
    "ModelSlot": "slot",
    "VerifyRow": "verify",
    "verify_folder": "verify",
    "verify_path": "verify",
}

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


def __getattr__(name: str) -> Any:
    """Import the module that defines `name` on first use."""
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
