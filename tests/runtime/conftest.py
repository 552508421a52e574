"""Fixtures for the runtime tests: writable copies of a committed model, to break."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.support.runtime import committed_models, edit_manifest, file_entry


@pytest.fixture
def model_copy(tmp_path: Path) -> Path:
    """A writable copy of the first committed model folder."""
    found = committed_models()
    if not found:
        pytest.skip("no committed model under models/")
    dst = tmp_path / found[0].name
    shutil.copytree(found[0], dst, ignore=shutil.ignore_patterns("eval", "__pycache__"))
    return dst


@pytest.fixture
def with_edgetpu_variant(model_copy: Path) -> Path:
    """The model copy with a `model_edgetpu.tflite` variant listed (a copy of the CPU file)."""
    shutil.copy(model_copy / "model.tflite", model_copy / "model_edgetpu.tflite")
    entry = file_entry(model_copy, "model_edgetpu.tflite", "tflite", accelerator="edgetpu")
    edit_manifest(model_copy, lambda m: m["files"].append(entry))
    return model_copy
